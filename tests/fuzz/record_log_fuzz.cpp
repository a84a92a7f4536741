// The collector's side of a worker's record log, and its checkpoint: what a
// damaged file (a stray write, a torn disk, a log of another version) can put
// in front of them. The input's first 8 bytes place the reader in the ring,
// the rest are the ring's bytes from there (wrapping); the reader takes every
// frame it believes and decodes it in place. The whole input is also offered
// as a checkpoint. Nothing may crash, and every frame must lie in the ring.
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "collector_checkpoint.hpp"
#include "record_log.hpp"
#include "require.hpp"

using smp::fuzz::require;

namespace {

constexpr uint64_t kCapacity = smp::kMinRecordLogBytes;

// One in-memory log file, made once: a header and a ring of kCapacity bytes.
int log_file() {
    static const int fd = [] {
        const int made = memfd_create("record_log_fuzz", MFD_CLOEXEC);
        require(made >= 0 && ftruncate(made, smp::kRecordLogHeaderBytes + kCapacity) == 0, "a memfd");
        return made;
    }();
    return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    (void)smp::decode_checkpoint(input);

    uint64_t start = 0;
    if (size < sizeof start) return 0;
    std::memcpy(&start, data, sizeof start);
    std::string_view ring_bytes = input.substr(sizeof start, kCapacity);
    start %= 1ULL << 40;

    std::string error;
    auto mapped = smp::MappedLog::map(log_file(), error);
    require(!mapped, "an all-zero header is not a log");
    void* base =
        mmap(nullptr, smp::kRecordLogHeaderBytes + kCapacity, PROT_READ | PROT_WRITE, MAP_SHARED, log_file(), 0);
    require(base != MAP_FAILED, "the memfd maps");
    auto& header = *static_cast<smp::RecordLogHeader*>(base);
    header.magic = smp::RecordLogHeader::kMagic;
    header.header_bytes = smp::kRecordLogHeaderBytes;
    header.number = 4096;
    header.capacity = kCapacity;
    header.written.store(start + ring_bytes.size());
    char* ring = static_cast<char*>(base) + smp::kRecordLogHeaderBytes;
    for (size_t i = 0; i < ring_bytes.size(); ++i) ring[(start + i) % kCapacity] = ring_bytes[i];

    mapped = smp::MappedLog::map(log_file(), error);
    require(mapped.has_value(), "a log with a valid header maps");
    const char* mapped_ring = mapped->ring();
    smp::RecordLogReader reader(std::move(*mapped), start, data[0] % 2 ? smp::RecordLogReader::kUnknownIndex : 0);
    while (auto frame = reader.next()) {
        require(frame->encoding.data() >= mapped_ring &&
                    frame->encoding.data() + frame->encoding.size() <= mapped_ring + kCapacity,
                "a frame lies in the ring");
        require(reader.position() <= start + ring_bytes.size(), "the reader stays before the writer");
        if (auto decoded = smp::DecodedRecord::view(frame->encoding)) {
            // What decodes is a whole record: its strings end inside the frame.
            const smp_record& record = decoded->record();
            if (record.path != nullptr) require(std::strlen(record.path) <= frame->encoding.size(), "strings end");
        }
    }
    // Zero the ring again for the next input (only what this one wrote).
    for (size_t i = 0; i < ring_bytes.size(); ++i) ring[(start + i) % kCapacity] = 0;
    std::memset(base, 0, sizeof header);
    munmap(base, smp::kRecordLogHeaderBytes + kCapacity);
    return 0;
}
