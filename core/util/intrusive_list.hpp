// A doubly linked list threaded through its elements: each element holds
// its own links, so that linking, unlinking and moving an element to the
// back cost no allocation and no search. The list owns nothing; whoever
// owns the elements unlinks one before freeing it.
#pragma once

#include <cstddef>

namespace smp {

template <typename T>
struct ListLinks {
    T* prev = nullptr;
    T* next = nullptr;
    bool linked = false;
};

template <typename T, ListLinks<T> T::*links>
class IntrusiveList {
   public:
    IntrusiveList() = default;
    IntrusiveList(const IntrusiveList&) = delete;
    IntrusiveList& operator=(const IntrusiveList&) = delete;

    bool empty() const { return head_ == nullptr; }
    size_t size() const { return size_; }
    T* front() const { return head_; }
    T* back() const { return tail_; }
    static T* next(const T* element) { return (element->*links).next; }
    static bool contains(const T* element) { return (element->*links).linked; }

    void push_back(T* element) {
        ListLinks<T>& own = element->*links;
        own.prev = tail_;
        own.next = nullptr;
        own.linked = true;
        if (tail_ != nullptr)
            (tail_->*links).next = element;
        else
            head_ = element;
        tail_ = element;
        ++size_;
    }

    // Does nothing when `element` is not in a list.
    void remove(T* element) {
        ListLinks<T>& own = element->*links;
        if (!own.linked) return;
        if (own.prev != nullptr)
            (own.prev->*links).next = own.next;
        else
            head_ = own.next;
        if (own.next != nullptr)
            (own.next->*links).prev = own.prev;
        else
            tail_ = own.prev;
        own = ListLinks<T>{};
        --size_;
    }

    void move_to_back(T* element) {
        if (element == tail_) return;
        remove(element);
        push_back(element);
    }

   private:
    T* head_ = nullptr;
    T* tail_ = nullptr;
    size_t size_ = 0;
};

}  // namespace smp
