#include "string_pool.hpp"

#include <cstring>
#include <functional>
#include <new>
#include <stdexcept>

namespace smp {

void SharedString::free_entry(Entry* entry) noexcept {
    entry->~Entry();
    ::operator delete(entry);
}

void SharedString::release() noexcept {
    if (entry_ == nullptr || --entry_->references > 0) return;
    if (entry_->pool != nullptr)
        entry_->pool->remove(entry_);
    else
        free_entry(entry_);
    entry_ = nullptr;
}

StringPool::~StringPool() {
    for (Entry* entry : entries_) entry->pool = nullptr;
}

uint32_t StringPool::hash_text(std::string_view text) noexcept {
    return static_cast<uint32_t>(std::hash<std::string_view>{}(text));
}

uint32_t StringPool::find_number(std::string_view text, uint32_t hash) const {
    return table_.find(hash, [&](uint32_t number) {
        Entry* entry = entries_[number];
        return entry->hash == hash && entry->length == text.size() &&
               std::memcmp(entry->text(), text.data(), text.size()) == 0;
    });
}

SharedString StringPool::find(std::string_view text) const {
    if (text.empty()) return {};
    const uint32_t number = find_number(text, hash_text(text));
    return number == IndexTable::kNone ? SharedString() : SharedString(entries_[number]);
}

SharedString StringPool::intern(std::string_view text) {
    if (text.empty()) return {};
    const uint32_t hash = hash_text(text);
    if (const uint32_t number = find_number(text, hash); number != IndexTable::kNone)
        return SharedString(entries_[number]);
    if (entries_.size() >= IndexTable::kNone || text.size() > UINT32_MAX)
        throw std::length_error("string pool: too many or too long texts");
    void* memory = ::operator new(sizeof(Entry) + text.size() + 1);
    auto* entry =
        new (memory) Entry{this, 0, static_cast<uint32_t>(text.size()), static_cast<uint32_t>(entries_.size()), hash};
    std::memcpy(entry->text(), text.data(), text.size());
    entry->text()[text.size()] = '\0';
    try {
        entries_.push_back(entry);
    } catch (...) {
        SharedString::free_entry(entry);
        throw;
    }
    try {
        table_.insert(hash, entry->number, [this](uint32_t number) { return entries_[number]->hash; });
    } catch (...) {
        entries_.pop_back();
        SharedString::free_entry(entry);
        throw;
    }
    text_bytes_ += text.size() + 1;
    return SharedString(entry);
}

void StringPool::remove(Entry* entry) noexcept {
    const auto hash_of = [this](uint32_t number) { return entries_[number]->hash; };
    const uint32_t number = entry->number;
    table_.erase(entry->hash, number, hash_of);
    const auto last = static_cast<uint32_t>(entries_.size() - 1);
    if (number != last) {
        Entry* moved = entries_[last];
        entries_[number] = moved;
        moved->number = number;
        table_.renumber(moved->hash, last, number);
    }
    entries_.pop_back();
    text_bytes_ -= entry->length + 1;
    SharedString::free_entry(entry);
    // A burst of distinct texts (client addresses) gives its memory back
    // once gone; shrink_to_fit may throw, and then the vector stays large.
    if (entries_.capacity() > 1024 && entries_.size() < entries_.capacity() / 4) {
        try {
            entries_.shrink_to_fit();
        } catch (...) {
        }
    }
}

size_t StringPool::heap_bytes() const {
    return entries_.size() * sizeof(Entry) + text_bytes_ + entries_.capacity() * sizeof(Entry*) + table_.heap_bytes();
}

}  // namespace smp
