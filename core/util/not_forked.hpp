// Memory a forked child does not get: pages mapped for this process alone
// (MADV_DONTFORK). The stats collector forks a copy of itself to write each
// checkpoint; every page the collector writes afterwards, while the copy
// shares it, faults once and is copied (copy on write). Memory that only the
// collector's other threads use, and that the copy never reads, is kept out
// of the copy instead: the fork maps less, and writing it faults no more.
//
// For containers that grow to a size and keep it (each allocation is a
// mapping of its own, whole pages): a std::vector given reserve() the
// largest size it will hold, not one that grows and shrinks often.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <new>

namespace smp {

template <typename T>
struct NotForkedAllocator {
    using value_type = T;

    NotForkedAllocator() = default;
    template <typename U>
    NotForkedAllocator(const NotForkedAllocator<U>&) noexcept {}

    T* allocate(size_t count) {
        if (count > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
        void* memory = mmap(nullptr, bytes(count), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (memory == MAP_FAILED) throw std::bad_alloc();
        // Refused only for mappings it cannot apply to: then the memory is
        // forked as malloc's is, which costs time, never correctness.
        madvise(memory, bytes(count), MADV_DONTFORK);
        return static_cast<T*>(memory);
    }
    void deallocate(T* memory, size_t count) noexcept { munmap(memory, bytes(count)); }

    template <typename U>
    bool operator==(const NotForkedAllocator<U>&) const noexcept {
        return true;
    }

   private:
    static size_t bytes(size_t count) {
        const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        return (count * sizeof(T) + page - 1) / page * page;
    }
};

}  // namespace smp
