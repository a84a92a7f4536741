#include "storage.hpp"

#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "smp-storage-XXXXXX").string();
        path = ::mkdtemp(pattern.data());
    }
    ~TempDir() { fs::remove_all(path); }
};

// A store that holds `old_rows` rows to purge and says, in order, what it
// was asked: "store N" (a batch's sequence) and "purge N" (rows deleted).
struct FakeStore {
    std::mutex mutex;
    std::vector<std::string> calls;
    uint64_t old_rows = 0;
    int64_t first_before_us = 0;
    std::chrono::milliseconds purge_takes{0};

    void said(std::string call) {
        std::lock_guard lock(mutex);
        calls.push_back(std::move(call));
    }
    std::vector<std::string> said() {
        std::lock_guard lock(mutex);
        return calls;
    }
};
FakeStore* the_store = nullptr;

int fake_store(void*, const smp_batch* batch, char*, size_t) {
    the_store->said("store " + std::to_string(batch->sequence));
    return SMP_OK;
}
int fake_purge(void*, int64_t before_us, uint32_t max_rows, uint32_t* purged, char*, size_t) {
    std::this_thread::sleep_for(the_store->purge_takes);
    if (the_store->first_before_us == 0) the_store->first_before_us = before_us;
    *purged = static_cast<uint32_t>(std::min<uint64_t>(max_rows, the_store->old_rows));
    the_store->old_rows -= *purged;
    the_store->said("purge " + std::to_string(*purged));
    return SMP_OK;
}

smp_module fake_module(bool can_purge) {
    smp_module m{};
    smp_module_stamp(&m);
    m.kind = SMP_MODULE_PLUGIN;
    m.name = "fake";
    m.store = fake_store;
    if (can_purge) m.purge = fake_purge;
    return m;
}

std::shared_ptr<const smp::Batch> batch(uint64_t sequence) {
    auto made = std::make_shared<smp::Batch>();
    made->origin = 1;
    made->sequence = sequence;
    smp::DownloadRow row;
    row.id = sequence;
    row.path = "a.bin";
    made->add(row);
    return made;
}

int64_t now_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

constexpr int64_t kDayUs = int64_t{86400} * 1000 * 1000;

}  // namespace

TEST_CASE("with a retention, the store is purged at start, a batch of rows a call, batches stored in between") {
    TempDir dir;
    FakeStore store;
    store.old_rows = 5 * 2000 + 7;
    store.purge_takes = std::chrono::milliseconds(50);
    the_store = &store;
    const smp_module api = fake_module(true);
    smp::ModuleEntry entry;
    entry.module = "fake";
    smp::ModuleInstance instance;
    instance.entry = &entry;
    instance.api = &api;
    const int64_t started_us = now_us();
    smp::metrics::StoreMetrics metrics;
    {
        smp::StorageThread thread(instance, (dir.path / "spool").string(), &metrics, 760 * kDayUs);
        std::this_thread::sleep_for(std::chrono::milliseconds(30));  // in the first call
        thread.submit(batch(1));
        for (int i = 0; i < 100 && store.said().size() < 7; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        thread.stop();
    }
    const std::vector<std::string> calls = store.said();
    REQUIRE(calls.size() == 7);
    // The batch waited for one call at most, not for the whole purge.
    const auto stored = std::find(calls.begin(), calls.end(), "store 1");
    REQUIRE(stored != calls.end());
    CHECK(stored - calls.begin() <= 2);
    std::vector<std::string> purges(calls.begin(), calls.end());
    purges.erase(std::remove(purges.begin(), purges.end(), "store 1"), purges.end());
    CHECK(purges ==
          std::vector<std::string>{"purge 2000", "purge 2000", "purge 2000", "purge 2000", "purge 2000", "purge 7"});
    CHECK(store.old_rows == 0);
    CHECK(metrics.purged_rows.load() == 5 * 2000 + 7);
    // Rows older than the retention, by the wall clock.
    CHECK(store.first_before_us >= started_us - 760 * kDayUs);
    CHECK(store.first_before_us <= now_us() - 760 * kDayUs);
    the_store = nullptr;
}

TEST_CASE("without a retention, or a store without purge, nothing is purged") {
    TempDir dir;
    FakeStore store;
    store.old_rows = 10;
    the_store = &store;
    smp::ModuleEntry entry;
    entry.module = "fake";
    for (const bool can_purge : {true, false}) {
        const smp_module api = fake_module(can_purge);
        smp::ModuleInstance instance;
        instance.entry = &entry;
        instance.api = &api;
        smp::StorageThread thread(instance, (dir.path / "spool").string(), nullptr, can_purge ? 0 : kDayUs);
        thread.submit(batch(1));
        for (int i = 0; i < 100 && store.said().empty(); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        thread.stop();
        CHECK(store.said() == std::vector<std::string>{"store 1"});
        store.calls.clear();
    }
    CHECK(store.old_rows == 10);
    the_store = nullptr;
}
