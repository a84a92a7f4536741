// Writes the seed corpus of record_codec_fuzz with the real encoder:
// record_codec_seeds DIR [LOG_DIR]. A datagram seed is a '\0' (the target's
// selector) followed by framed records, as a worker sends them. LOG_DIR gets
// the seeds of record_log_fuzz: a reader's start position and the ring's
// bytes from there, written by the real RecordLogWriter.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "record_codec.hpp"
#include "record_log.hpp"

namespace {

void write_seed(const std::string& path, const std::string& batch) {
    std::ofstream(path, std::ios::binary) << '\0' << batch;
}

// Appends `records` to a fresh log (first at the ring's start, then again
// across its end) and writes each case as a seed.
void write_log_seeds(const std::string& dir, const std::vector<smp_record>& records) {
    char temp[] = "/tmp/smp-log-seeds-XXXXXX";
    const std::string logs = mkdtemp(temp);
    smp::RecordLogDirectory directory(logs);
    std::string error;
    auto created = directory.create(smp::kMinRecordLogBytes, static_cast<uid_t>(-1), static_cast<gid_t>(-1), error);
    auto mapped = created ? smp::MappedLog::map(created->fd, error) : std::nullopt;
    if (!mapped) {
        std::fprintf(stderr, "record_codec_seeds: %s\n", error.c_str());
        std::exit(1);
    }
    smp::RecordLogHeader& header = mapped->header();
    const char* ring = mapped->ring();
    const uint64_t capacity = header.capacity;
    smp::RecordLogWriter writer(std::move(*mapped));
    const auto seed = [&](const std::string& name, uint64_t start) {
        const uint64_t end = header.written.load();
        std::string bytes(reinterpret_cast<const char*>(&start), sizeof start);
        for (uint64_t at = start; at < end; ++at) bytes += ring[at % capacity];
        std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
    };
    for (const auto& record : records) writer.append(record, smp::RecordKind::close, 1234);
    seed("three_frames", 0);
    // Fill to near the ring's end, release it all, and write across the end.
    while (header.written.load() + 2000 < capacity) writer.append(records[0], smp::RecordKind::close, 1234);
    header.released.store(header.written.load());
    const uint64_t wrap_start = header.written.load();
    for (const auto& record : records) writer.append(record, smp::RecordKind::transfer, 1234);
    seed("across_the_end", wrap_start);
    ::close(created->fd);
    std::filesystem::remove_all(logs);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2 && argc != 3) {
        std::fprintf(stderr, "usage: record_codec_seeds DIR [LOG_DIR]\n");
        return 2;
    }
    const std::string dir = argv[1];
    const smp_interval intervals[] = {{0, 99}, {200, 299}, {1000, 1048575}};
    smp_record r{};
    r.size = sizeof r;
    r.connection_id = 42;
    r.request_id = 3;
    r.worker_id = 2;
    r.module = "http_download";
    r.node = "node-a";
    r.start_us = 1'700'000'000'000'000;
    r.end_us = 1'700'000'001'500'000;
    r.client_ip = "2001:db8::1";
    r.client_port = 51234;
    r.method = "GET";
    r.path = "big.bin";
    r.target = "/big.bin?x=1";
    r.protocol = "HTTP/1.1";
    r.user_agent = "aria2/1.36.0";
    r.range = "bytes=0-99,200-299";
    r.etag = "\"1400000-18eb\"";
    r.file_size = 20 * 1024 * 1024;
    r.status = 206;
    r.intervals = intervals;
    r.interval_count = 3;
    r.header_bytes = 250;
    r.body_bytes = 400;
    r.reason = SMP_END_CLIENT_CLOSED;
    r.received_bytes = 180;

    std::string batch;
    smp::append_record(r, smp::RecordKind::close, 1234, batch);
    write_seed(dir + "/close_206", batch);

    smp_record transfer = r;
    transfer.reason = SMP_END_COMPLETED;
    transfer.interval_count = 1;
    std::string two;
    smp::append_record(transfer, smp::RecordKind::transfer, 1234, two);
    smp::append_record(r, smp::RecordKind::close, 1234, two);
    write_seed(dir + "/transfer_then_close", two);

    smp_record bare{};  // a refused connection: no strings but the module's
    bare.size = sizeof bare;
    bare.module = "forward";
    bare.client_ip = "192.0.2.7";
    bare.file_size = -1;
    bare.reason = SMP_END_REJECTED_LIMIT;
    batch.clear();
    smp::append_record(bare, smp::RecordKind::close, 99, batch);
    write_seed(dir + "/bare_close", batch);

    // A request over TLS (SMR5 carries its version).
    smp_record over_tls = r;
    over_tls.tls_version = "TLSv1.3";
    batch.clear();
    smp::append_record(over_tls, smp::RecordKind::close, 1234, batch);
    write_seed(dir + "/close_tls", batch);

    // The layout before ABI 1.4 (SMR2), still read from spool files: the same
    // record without received_bytes, and magic "SMR2".
    batch.clear();
    smp::append_record(r, smp::RecordKind::close, 1234, batch);
    std::string old = batch.substr(4);
    const uint32_t magic = 0x534d5232;
    old.replace(0, sizeof magic, reinterpret_cast<const char*>(&magic), sizeof magic);
    // offsetof(Fixed, received_bytes), and the 8 bytes of it, 16 of the log
    // place and 8 of tls_version's length; r has no tls_version.
    old.erase(104, 32);
    const auto length = static_cast<uint32_t>(old.size());
    write_seed(dir + "/smr2_close", std::string(reinterpret_cast<const char*>(&length), sizeof length) + old);
    // The layout before ABI 1.9 (SMR4): the same record without
    // tls_version's length (the 8 bytes at offsetof(Fixed, tls_version_length)).
    batch.clear();
    smp::append_record(r, smp::RecordKind::close, 1234, batch);
    std::string smr4 = batch.substr(4);
    const uint32_t magic4 = 0x534d5234;
    smr4.replace(0, sizeof magic4, reinterpret_cast<const char*>(&magic4), sizeof magic4);
    smr4.erase(128, 8);
    const auto length4 = static_cast<uint32_t>(smr4.size());
    write_seed(dir + "/smr4_close", std::string(reinterpret_cast<const char*>(&length4), sizeof length4) + smr4);
    if (argc == 3) write_log_seeds(argv[2], {r, transfer, bare, over_tls});
    return 0;
}
