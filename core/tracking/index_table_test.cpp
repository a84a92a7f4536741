#include "index_table.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <set>
#include <vector>

using smp::IndexTable;

namespace {

// The table's entries stand for these values; a poor hash (many equal
// ones) makes long probe runs, where moving entries back is tested.
struct Values {
    std::vector<uint64_t> values;
    size_t hash_of(uint32_t index) const { return values[index] % 97; }
    uint32_t find(const IndexTable& table, uint64_t value) const {
        return table.find(value % 97, [&](uint32_t index) { return values[index] == value; });
    }
};

}  // namespace

TEST_CASE("an index table finds what it holds after insertions, erasures and renumbering") {
    Values store;
    IndexTable table;
    const auto hash_of = [&](uint32_t index) { return store.hash_of(index); };
    std::mt19937_64 random(11);
    std::set<uint64_t> present;
    for (uint32_t i = 0; i < 2000; ++i) {
        const uint64_t value = random() % 100000;
        if (present.count(value) != 0) continue;
        store.values.push_back(value);
        table.insert(hash_of(static_cast<uint32_t>(store.values.size() - 1)),
                     static_cast<uint32_t>(store.values.size() - 1), hash_of);
        present.insert(value);
    }
    CHECK(table.size() == present.size());
    const size_t full = table.heap_bytes();
    // Erase most, keeping the store dense as the tracker does: the last
    // value takes the erased one's index.
    while (store.values.size() > 20) {
        const auto index = static_cast<uint32_t>(random() % store.values.size());
        table.erase(store.hash_of(index), index, hash_of);
        present.erase(store.values[index]);
        const auto last = static_cast<uint32_t>(store.values.size() - 1);
        if (index != last) {
            store.values[index] = store.values[last];
            table.renumber(store.hash_of(index), last, index);
        }
        store.values.pop_back();
    }
    CHECK(table.size() == 20);
    CHECK(table.heap_bytes() < full);  // it shrank
    for (uint32_t index = 0; index < store.values.size(); ++index)
        CHECK(store.find(table, store.values[index]) == index);
    CHECK(store.find(table, 100001) == IndexTable::kNone);
    table.clear();
    CHECK(table.size() == 0);
    CHECK(store.find(table, store.values[0]) == IndexTable::kNone);
}
