// Interned strings: each distinct text is held once, however many handles
// point at it, and goes when the last handle does. A million open downloads
// of a thousand files by a hundred user agents hold each path, ETag and
// agent once, and a handle each (8 bytes).
//
// A pool and its handles belong to one thread: the counts are not atomic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "index_table.hpp"

namespace smp {

class StringPool;

// A handle to a text in a StringPool; the default one is the empty text.
// Copies count references. A handle may outlive its pool: the text then
// lives until its last handle goes.
class SharedString {
   public:
    SharedString() noexcept = default;
    SharedString(const SharedString& other) noexcept : entry_(other.entry_) {
        if (entry_ != nullptr) ++entry_->references;
    }
    SharedString(SharedString&& other) noexcept : entry_(std::exchange(other.entry_, nullptr)) {}
    SharedString& operator=(const SharedString& other) noexcept {
        SharedString copy(other);
        std::swap(entry_, copy.entry_);
        return *this;
    }
    SharedString& operator=(SharedString&& other) noexcept {
        SharedString taken(std::move(other));
        std::swap(entry_, taken.entry_);
        return *this;
    }
    ~SharedString() { release(); }

    std::string_view view() const noexcept {
        return entry_ == nullptr ? std::string_view() : std::string_view(entry_->text(), entry_->length);
    }
    // Reads as text wherever a std::string_view is wanted.
    operator std::string_view() const noexcept { return view(); }
    // NUL-terminated.
    const char* c_str() const noexcept { return entry_ == nullptr ? "" : entry_->text(); }
    bool empty() const noexcept { return entry_ == nullptr; }
    // The text's hash, computed once, when it was interned.
    uint32_t hash() const noexcept { return entry_ == nullptr ? 0 : entry_->hash; }
    // The text's place among its pool's, 0 to size() - 1, until the pool
    // next changes: what a snapshot writes instead of the text. Not for the
    // empty handle, which is in no pool.
    uint32_t number() const noexcept { return entry_->number; }
    // Two handles of one pool hold the same text exactly when they share
    // its entry: comparing them compares addresses, not texts.
    bool operator==(const SharedString& other) const noexcept { return entry_ == other.entry_; }

   private:
    friend class StringPool;
    // The text follows its entry in the same allocation: an entry is 24
    // bytes and the text's, with its NUL.
    struct Entry {
        StringPool* pool;  // null once the pool is gone
        uint32_t references;
        uint32_t length;
        uint32_t number;  // its place in the pool's entries_
        uint32_t hash;
        char* text() noexcept { return reinterpret_cast<char*>(this + 1); }
        const char* text() const noexcept { return reinterpret_cast<const char*>(this + 1); }
    };

    // Counts a reference to `entry`.
    explicit SharedString(Entry* entry) noexcept : entry_(entry) { ++entry_->references; }
    void release() noexcept;
    static void free_entry(Entry* entry) noexcept;

    Entry* entry_ = nullptr;
};

class StringPool {
   public:
    StringPool() = default;
    StringPool(const StringPool&) = delete;
    StringPool& operator=(const StringPool&) = delete;
    // The texts that handles still hold stay until their last handle goes.
    ~StringPool();

    // The handle of `text`, added to the pool when it is not there yet.
    SharedString intern(std::string_view text);
    // The handle of `text` when the pool has it, else the empty handle.
    SharedString find(std::string_view text) const;
    // Distinct texts held.
    size_t size() const { return entries_.size(); }
    // The text numbered `number` (see SharedString::number()).
    std::string_view text(uint32_t number) const {
        const SharedString::Entry* entry = entries_[number];
        return {entry->text(), entry->length};
    }
    // What the pool allocated: entries, texts and its tables (malloc's own
    // overhead aside).
    size_t heap_bytes() const;

   private:
    friend class SharedString;
    using Entry = SharedString::Entry;

    static uint32_t hash_text(std::string_view text) noexcept;
    uint32_t find_number(std::string_view text, uint32_t hash) const;
    // Called by the last handle of `entry`.
    void remove(Entry* entry) noexcept;

    // Dense: a removed entry's place takes the last one, so that the
    // numbers stay 0 to size() - 1 and the table holds 4-byte numbers.
    std::vector<Entry*> entries_;
    IndexTable table_;
    size_t text_bytes_ = 0;
};

}  // namespace smp
