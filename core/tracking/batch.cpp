#include "batch.hpp"

#include <algorithm>
#include <cstring>

#include "byte_codec.hpp"

namespace smp {
namespace {

constexpr uint32_t kBatchMagic = 0x534d4232;  // "SMB2": bump when the layout changes
// Before client_class (ABI 1.12): no class bytes after the downloads. Still
// found in spool files written by an earlier version: its records and
// downloads are read with no class (stores read them as unknown).
constexpr uint32_t kBatchMagicWithoutClass = 0x534d4231;  // "SMB1"
constexpr uint32_t kDownloadMagic = 0x534d4433;           // "SMD3"
// Before the active spans (ABI 1.13): the delivered intervals end the frame.
constexpr uint32_t kDownloadMagicWithoutActive = 0x534d4432;  // "SMD2"

struct BatchHeader {
    uint32_t magic;
    uint32_t record_count;
    uint64_t origin;
    uint64_t sequence;
    uint32_t download_count;
    uint32_t reserved;
};

struct DownloadFixed {
    uint32_t magic;
    uint32_t interval_count;
    uint64_t id;
    uint64_t file_size;
    uint64_t distinct_bytes;
    uint64_t bytes_sent;
    int64_t first_us;
    int64_t last_us;
    int64_t active_us;
    double latitude;
    double longitude;
    uint32_t requests;
    uint32_t resumes;
    uint32_t asn;
    uint8_t reason;
    uint8_t completed;
    uint8_t finished;
    uint8_t has_location;
    uint32_t lengths[8];
};

// Takes a length-framed piece from the front of `data`.
bool take_frame(std::string_view& data, std::string_view& frame) {
    uint32_t length = 0;
    if (!take_value(data, length) || length > data.size()) return false;
    frame = data.substr(0, length);
    data.remove_prefix(length);
    return true;
}

// Takes `count` intervals from the front of `data`.
bool take_intervals(std::string_view& data, uint32_t count, std::vector<smp_interval>& out) {
    const size_t bytes = size_t{count} * sizeof(smp_interval);
    if (bytes > data.size()) return false;
    out.resize(count);
    if (bytes != 0) std::memcpy(out.data(), data.data(), bytes);
    data.remove_prefix(bytes);
    return true;
}

// The texts of a download frame, in their order.
auto strings_of(DownloadRow& row) {
    return std::array{&row.node, &row.client_ip,   &row.user_agent, &row.path,
                      &row.etag, &row.geo.country, &row.geo.city,   &row.geo.organisation};
}
auto strings_of(const smp_download& d) {
    const auto text = [](const char* t) { return std::string_view(t != nullptr ? t : ""); };
    return std::array{text(d.node), text(d.client_ip), text(d.user_agent), text(d.path),
                      text(d.etag), text(d.country),   text(d.city),       text(d.organisation)};
}

void append_download(const smp_download& d, std::string& out) {
    const size_t frame = out.size();
    append_value(out, uint32_t{0});  // the length, written once known
    DownloadFixed fixed{};
    fixed.magic = kDownloadMagic;
    fixed.interval_count = static_cast<uint32_t>(d.delivered_count);
    fixed.id = d.id;
    fixed.file_size = d.file_size;
    fixed.distinct_bytes = d.distinct_bytes;
    fixed.bytes_sent = d.bytes_sent;
    fixed.first_us = d.first_us;
    fixed.last_us = d.last_us;
    fixed.active_us = d.active_us;
    fixed.latitude = d.latitude;
    fixed.longitude = d.longitude;
    fixed.requests = d.requests;
    fixed.resumes = d.resumes;
    fixed.asn = d.asn;
    fixed.reason = static_cast<uint8_t>(d.reason);
    fixed.completed = d.completed != 0;
    fixed.finished = d.finished != 0;
    fixed.has_location = d.has_location != 0;
    const auto strings = strings_of(d);
    for (size_t i = 0; i < strings.size(); ++i) fixed.lengths[i] = static_cast<uint32_t>(strings[i].size());
    append_value(out, fixed);
    for (const std::string_view text : strings) out += text;
    out.append(reinterpret_cast<const char*>(d.delivered), d.delivered_count * sizeof(smp_interval));
    append_value(out, static_cast<uint32_t>(d.active_count));
    out.append(reinterpret_cast<const char*>(d.active), d.active_count * sizeof(smp_interval));
    const auto length = static_cast<uint32_t>(out.size() - frame - sizeof(uint32_t));
    std::memcpy(out.data() + frame, &length, sizeof length);
}

std::optional<DownloadRow> decode_download(std::string_view data) {
    DownloadFixed fixed{};
    if (!take_value(data, fixed) || (fixed.magic != kDownloadMagic && fixed.magic != kDownloadMagicWithoutActive))
        return std::nullopt;
    DownloadRow row;
    for (size_t i = 0; auto* text : strings_of(row)) {
        const uint32_t length = fixed.lengths[i++];
        if (length > data.size()) return std::nullopt;
        text->assign(data.data(), length);
        data.remove_prefix(length);
    }
    if (!take_intervals(data, fixed.interval_count, row.delivered)) return std::nullopt;
    uint32_t active_count = 0;
    if (fixed.magic == kDownloadMagic &&
        (!take_value(data, active_count) || !take_intervals(data, active_count, row.active)))
        return std::nullopt;
    if (!data.empty()) return std::nullopt;
    row.id = fixed.id;
    row.file_size = fixed.file_size;
    row.distinct_bytes = fixed.distinct_bytes;
    row.bytes_sent = fixed.bytes_sent;
    row.first_us = fixed.first_us;
    row.last_us = fixed.last_us;
    row.active_us = fixed.active_us;
    row.geo.latitude = fixed.latitude;
    row.geo.longitude = fixed.longitude;
    row.geo.has_location = fixed.has_location != 0;
    row.geo.asn = fixed.asn;
    row.requests = fixed.requests;
    row.resumes = fixed.resumes;
    row.reason = static_cast<smp_end_reason>(fixed.reason);
    row.completed = fixed.completed != 0;
    row.finished = fixed.finished != 0;
    return row;
}

// The geo-location's texts are NULL when unknown.
const char* or_null(Arena& held, const std::string& text) { return text.empty() ? nullptr : held.text(text); }

// A download of `batch` with its texts, place, state and class; the caller
// sets the rest.
smp_download& push_download(Batch& batch, std::array<std::string_view, 5> names, const GeoInfo& geo, bool finished,
                            ClientClass client_class) {
    smp_download& out = batch.downloads.emplace_back();
    Arena& held = batch.held;
    out.size = sizeof out;
    out.node = held.text(names[0]);
    out.client_ip = held.text(names[1]);
    out.user_agent = held.text(names[2]);
    out.path = held.text(names[3]);
    out.etag = held.text(names[4]);
    out.country = or_null(held, geo.country);
    out.city = or_null(held, geo.city);
    out.has_location = geo.has_location ? 1 : 0;
    out.latitude = geo.latitude;
    out.longitude = geo.longitude;
    out.asn = geo.asn;
    out.organisation = or_null(held, geo.organisation);
    out.finished = finished ? 1 : 0;
    out.client_class = client_class_name(client_class);
    return out;
}

// IntervalSet's intervals are smp_intervals by layout.
std::span<const smp_interval> as_intervals(const IntervalSet& set) {
    static_assert(sizeof(IntervalSet::Interval) == sizeof(smp_interval));
    const auto intervals = set.intervals();
    return {reinterpret_cast<const smp_interval*>(intervals.data()), intervals.size()};
}

// Empties the room and makes it hold `count`, growing it by half again at
// least: a store that takes a little more at each call would otherwise map
// the whole room afresh each time, a page fault every 4 KiB of it.
template <typename Room>
void make_room(Room& room, size_t count) {
    room.clear();
    if (count > room.capacity()) room.reserve(std::max(count, room.capacity() + room.capacity() / 2));
}

}  // namespace

char* Arena::allocate(size_t size) {
    size = (size + alignof(smp_interval) - 1) & ~(alignof(smp_interval) - 1);
    if (size > left_) {
        // A text longer than a block has a block of its own.
        const size_t block = std::max(size, kBlockBytes);
        blocks_.push_back(std::make_unique_for_overwrite<char[]>(block));
        next_ = blocks_.back().get();
        left_ = block;
    }
    char* place = next_;
    next_ += size;
    left_ -= size;
    return place;
}

const char* Arena::text(std::string_view text) {
    char* place = allocate(text.size() + 1);
    if (!text.empty()) std::memcpy(place, text.data(), text.size());  // an empty view's data() may be NULL
    place[text.size()] = '\0';
    return place;
}

const smp_interval* Arena::intervals(std::span<const smp_interval> intervals) {
    if (intervals.empty()) return nullptr;
    char* place = allocate(intervals.size_bytes());
    std::memcpy(place, intervals.data(), intervals.size_bytes());
    return reinterpret_cast<const smp_interval*>(place);
}

void Batch::add(const LogicalDownload& d, const GeoInfo& geo, bool finished, ClientClass client_class) {
    smp_download& out =
        push_download(*this, {d.node.view(), d.client_ip.view(), d.user_agent.view(), d.path.view(), d.etag.view()},
                      geo, finished, client_class);
    out.id = d.id;
    out.file_size = d.file_size;
    out.distinct_bytes = d.distinct_bytes();
    out.bytes_sent = d.bytes_sent;
    out.wasted_bytes = d.wasted_bytes();
    out.completed = d.completed() ? 1 : 0;
    out.requests = d.requests;
    out.resumes = d.resumes;
    out.first_us = d.first_us;
    out.last_us = d.last_us;
    out.active_us = d.active_us();
    out.reason = d.reason();
    const auto delivered = as_intervals(d.delivered);
    out.delivered = held.intervals(delivered);
    out.delivered_count = delivered.size();
    const auto active = as_intervals(d.active);
    out.active = held.intervals(active);
    out.active_count = active.size();
}

void Batch::add(const DownloadRow& d) {
    smp_download& out =
        push_download(*this, {d.node, d.client_ip, d.user_agent, d.path, d.etag}, d.geo, d.finished, d.client_class);
    out.id = d.id;
    out.file_size = d.file_size;
    out.distinct_bytes = d.distinct_bytes;
    out.bytes_sent = d.bytes_sent;
    out.wasted_bytes = d.bytes_sent - d.distinct_bytes;
    out.completed = d.completed ? 1 : 0;
    out.requests = d.requests;
    out.resumes = d.resumes;
    out.first_us = d.first_us;
    out.last_us = d.last_us;
    out.active_us = d.active_us;
    out.reason = d.reason;
    out.delivered = held.intervals(d.delivered);
    out.delivered_count = d.delivered.size();
    out.active = held.intervals(d.active);
    out.active_count = d.active.size();
}

void Batch::add(DecodedRecord&& record, ClientClass client_class) {
    records.push_back(record.record());
    records.back().client_class = client_class_name(client_class);
    if (auto bytes = record.take_bytes()) kept.push_back(std::move(bytes));
}

Batch Batch::copy() const {
    // Through the spool's encoding: what it keeps is what a spool file keeps.
    return std::move(*decode_batch(encode_batch(*this)));
}

const smp_batch* BatchView::of(std::span<const Batch* const> batches) {
    // One batch (the usual case) is viewed where its records and downloads are.
    const Batch& last = *batches.back();
    const smp_record* records = last.records.data();
    size_t record_count = last.records.size();
    const smp_download* downloads = last.downloads.data();
    size_t download_count = last.downloads.size();
    if (batches.size() > 1) {
        record_count = 0;
        download_count = 0;
        for (const Batch* batch : batches) {
            record_count += batch->records.size();
            download_count += batch->downloads.size();
        }
        make_room(records_, record_count);
        make_room(downloads_, download_count);
        for (const Batch* batch : batches) {
            records_.insert(records_.end(), batch->records.begin(), batch->records.end());
            downloads_.insert(downloads_.end(), batch->downloads.begin(), batch->downloads.end());
        }
        records = records_.data();
        downloads = downloads_.data();
    }
    batch_ = {sizeof batch_, records, record_count, downloads, download_count, last.origin, last.sequence};
    return &batch_;
}

std::string encode_batch(const Batch& batch) {
    std::string out;
    append_value(out, BatchHeader{kBatchMagic, static_cast<uint32_t>(batch.records.size()), batch.origin,
                                  batch.sequence, static_cast<uint32_t>(batch.downloads.size()), 0});
    for (const auto& record : batch.records) append_record(record, RecordKind::close, 0, out);
    for (const auto& download : batch.downloads) append_download(download, out);
    // The classes, a byte each: the records' then the downloads'.
    for (const auto& record : batch.records)
        out += static_cast<char>(
            client_class_byte(client_class_of_name(smp_record_client_class(&record)).value_or(ClientClass::unknown)));
    for (const auto& download : batch.downloads)
        out += static_cast<char>(client_class_byte(
            client_class_of_name(smp_download_client_class(&download)).value_or(ClientClass::unknown)));
    return out;
}

std::optional<Batch> decode_batch(std::string_view data) {
    BatchHeader header{};
    if (!take_value(data, header) || (header.magic != kBatchMagic && header.magic != kBatchMagicWithoutClass))
        return std::nullopt;
    Batch batch;
    batch.origin = header.origin;
    batch.sequence = header.sequence;
    std::string_view frame;
    for (uint32_t i = 0; i < header.record_count; ++i) {
        auto record = take_frame(data, frame) ? DecodedRecord::decode(frame) : std::nullopt;
        if (!record) return std::nullopt;
        batch.add(std::move(*record), ClientClass::unknown);
    }
    for (uint32_t i = 0; i < header.download_count; ++i) {
        auto download = take_frame(data, frame) ? decode_download(frame) : std::nullopt;
        if (!download) return std::nullopt;
        batch.add(*download);
    }
    if (header.magic == kBatchMagicWithoutClass) {
        for (auto& record : batch.records) record.client_class = nullptr;
        return data.empty() ? std::optional(std::move(batch)) : std::nullopt;
    }
    if (data.size() != size_t{header.record_count} + header.download_count) return std::nullopt;
    const auto take_class = [&data] {
        const auto byte = static_cast<uint8_t>(data.front());
        data.remove_prefix(1);
        return client_class_of_byte(byte);
    };
    for (auto& record : batch.records) record.client_class = client_class_name(take_class());
    for (auto& download : batch.downloads) download.client_class = client_class_name(take_class());
    return batch;
}

}  // namespace smp
