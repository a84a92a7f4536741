// A hash set of 32-bit indices into storage its owner keeps: the owner says
// how to hash and compare what an index stands for. 4 bytes a slot, open
// addressing with linear probing, at most three quarters full, so a million
// entries cost 8 MiB where a node-based std::unordered_set costs 40 MiB.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>

namespace smp {

class IndexTable {
   public:
    static constexpr uint32_t kNone = UINT32_MAX;

    IndexTable() = default;
    IndexTable(const IndexTable&) = delete;
    IndexTable& operator=(const IndexTable&) = delete;

    size_t size() const { return size_; }
    size_t heap_bytes() const { return capacity() * sizeof(uint32_t); }

    // The index whose entry `matches`, among those stored with `hash`; kNone
    // when there is none.
    template <typename Matches>
    uint32_t find(size_t hash, const Matches& matches) const {
        if (size_ == 0) return kNone;
        for (size_t slot = home(hash);; slot = (slot + 1) & mask()) {
            const uint32_t index = slots_[slot];
            if (index == kNone) return kNone;
            if (matches(index)) return index;
        }
    }

    // Adds `index`, not in the table yet; `hash_of(index)` gives the hash of
    // any stored index, for when the table grows.
    template <typename HashOf>
    void insert(size_t hash, uint32_t index, const HashOf& hash_of) {
        if ((size_ + 1) * 4 > capacity() * 3 && !rehash(capacity() == 0 ? kMinCapacity : capacity() * 2, hash_of))
            throw std::bad_alloc();
        place(hash, index);
        ++size_;
    }

    // Removes `index`, stored with `hash`. The entries after it in its probe
    // run move back, so that no tombstones slow later look-ups; a table
    // emptied below an eighth shrinks, so a burst's memory goes back (and
    // stays as it is when there is no memory for the smaller one: erasing
    // never fails).
    template <typename HashOf>
    void erase(size_t hash, uint32_t index, const HashOf& hash_of) {
        size_t hole = slot_holding(hash, index);
        for (size_t next = (hole + 1) & mask(); slots_[next] != kNone; next = (next + 1) & mask()) {
            const size_t wanted = home(hash_of(slots_[next]));
            // The entry at `next` may fill the hole only if its home is not
            // in the cyclic range (hole, next]: it would be found no more.
            const bool home_after_hole =
                hole < next ? (hole < wanted && wanted <= next) : (hole < wanted || wanted <= next);
            if (home_after_hole) continue;
            slots_[hole] = slots_[next];
            hole = next;
        }
        slots_[hole] = kNone;
        --size_;
        if (capacity() > kMinCapacity && size_ * 8 < capacity()) rehash(capacity() / 2, hash_of);
    }

    // The entry stored as `from` with `hash` is now at index `to`: its owner
    // moved it.
    void renumber(size_t hash, uint32_t from, uint32_t to) { slots_[slot_holding(hash, from)] = to; }

    void clear() {
        slots_.reset();
        shift_ = 64;
        size_ = 0;
    }

    // Room for `count` entries without growing.
    template <typename HashOf>
    void reserve(size_t count, const HashOf& hash_of) {
        size_t wanted = kMinCapacity;
        while (wanted * 3 < count * 4) wanted *= 2;
        if (wanted > capacity() && !rehash(wanted, hash_of)) throw std::bad_alloc();
    }

   private:
    static constexpr size_t kMinCapacity = 16;

    size_t capacity() const { return slots_ == nullptr ? 0 : size_t{1} << (64 - shift_); }
    size_t mask() const { return capacity() - 1; }
    // Fibonacci hashing: the top bits of the product spread even hashes
    // with poor low bits over the whole table.
    size_t home(size_t hash) const { return static_cast<size_t>((hash * 0x9e3779b97f4a7c15ULL) >> shift_); }

    size_t slot_holding(size_t hash, uint32_t index) const {
        size_t slot = home(hash);
        while (slots_[slot] != index) slot = (slot + 1) & mask();
        return slot;
    }

    void place(size_t hash, uint32_t index) {
        size_t slot = home(hash);
        while (slots_[slot] != kNone) slot = (slot + 1) & mask();
        slots_[slot] = index;
    }

    // False, and the table as it was, when there is no memory for the new one.
    template <typename HashOf>
    bool rehash(size_t capacity, const HashOf& hash_of) noexcept {
        std::unique_ptr<uint32_t[]> fresh(new (std::nothrow) uint32_t[capacity]);
        if (fresh == nullptr) return false;
        std::fill_n(fresh.get(), capacity, kNone);
        const size_t old_capacity = this->capacity();
        const auto old = std::exchange(slots_, std::move(fresh));
        shift_ = 64 - std::countr_zero(capacity);
        for (size_t slot = 0; slot < old_capacity; ++slot)
            if (old[slot] != kNone) place(hash_of(old[slot]), old[slot]);
        return true;
    }

    std::unique_ptr<uint32_t[]> slots_;
    int shift_ = 64;  // 64 - log2(capacity)
    size_t size_ = 0;
};

}  // namespace smp
