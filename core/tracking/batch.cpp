#include "batch.hpp"

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

template <typename Row>
auto strings_of(Row& row) {
    return std::array{&row.node, &row.client_ip,   &row.user_agent, &row.path,
                      &row.etag, &row.geo.country, &row.geo.city,   &row.geo.organisation};
}

void append_download(const DownloadRow& row, std::string& out) {
    const size_t frame = out.size();
    append_value(out, uint32_t{0});  // the length, written once known
    DownloadFixed fixed{};
    fixed.magic = kDownloadMagic;
    fixed.interval_count = static_cast<uint32_t>(row.delivered.size());
    fixed.id = row.id;
    fixed.file_size = row.file_size;
    fixed.distinct_bytes = row.distinct_bytes;
    fixed.bytes_sent = row.bytes_sent;
    fixed.first_us = row.first_us;
    fixed.last_us = row.last_us;
    fixed.active_us = row.active_us;
    fixed.latitude = row.geo.latitude;
    fixed.longitude = row.geo.longitude;
    fixed.requests = row.requests;
    fixed.resumes = row.resumes;
    fixed.asn = row.geo.asn;
    fixed.reason = static_cast<uint8_t>(row.reason);
    fixed.completed = row.completed;
    fixed.finished = row.finished;
    fixed.has_location = row.geo.has_location;
    const auto strings = strings_of(row);
    for (size_t i = 0; i < strings.size(); ++i) fixed.lengths[i] = static_cast<uint32_t>(strings[i]->size());
    append_value(out, fixed);
    for (const auto* text : strings) out += *text;
    out.append(reinterpret_cast<const char*>(row.delivered.data()), row.delivered.size() * sizeof(smp_interval));
    append_value(out, static_cast<uint32_t>(row.active.size()));
    out.append(reinterpret_cast<const char*>(row.active.data()), row.active.size() * sizeof(smp_interval));
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

const char* or_null(const std::string& text) { return text.empty() ? nullptr : text.c_str(); }

}  // namespace

DownloadRow::DownloadRow(const LogicalDownload& d, GeoInfo geo_info, bool is_finished, ClientClass of_class)
    : id(d.id),
      node(d.node),
      client_ip(d.client_ip),
      user_agent(d.user_agent),
      path(d.path),
      etag(d.etag),
      file_size(d.file_size),
      distinct_bytes(d.distinct_bytes()),
      bytes_sent(d.bytes_sent),
      completed(d.completed()),
      finished(is_finished),
      requests(d.requests),
      resumes(d.resumes),
      first_us(d.first_us),
      last_us(d.last_us),
      active_us(d.active_us()),
      reason(d.reason()),
      client_class(of_class),
      geo(std::move(geo_info)) {
    delivered.reserve(d.delivered.intervals().size());
    for (const auto& interval : d.delivered.intervals()) delivered.push_back({interval.first, interval.last});
    active.reserve(d.active.intervals().size());
    for (const auto& span : d.active.intervals()) active.push_back({span.first, span.last});
}

smp_download DownloadRow::view() const {
    smp_download out{};
    out.size = sizeof out;
    out.id = id;
    out.client_ip = client_ip.c_str();
    out.user_agent = user_agent.c_str();
    out.path = path.c_str();
    out.etag = etag.c_str();
    out.file_size = file_size;
    out.distinct_bytes = distinct_bytes;
    out.bytes_sent = bytes_sent;
    out.wasted_bytes = bytes_sent - distinct_bytes;
    out.completed = completed ? 1 : 0;
    out.requests = requests;
    out.resumes = resumes;
    out.first_us = first_us;
    out.last_us = last_us;
    out.active_us = active_us;
    out.reason = reason;
    out.delivered = delivered.data();
    out.delivered_count = delivered.size();
    out.country = or_null(geo.country);
    out.city = or_null(geo.city);
    out.has_location = geo.has_location ? 1 : 0;
    out.latitude = geo.latitude;
    out.longitude = geo.longitude;
    out.asn = geo.asn;
    out.organisation = or_null(geo.organisation);
    out.finished = finished ? 1 : 0;
    out.node = node.c_str();
    out.client_class = client_class_name(client_class);
    out.active = active.data();
    out.active_count = active.size();
    return out;
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

BatchView::BatchView(std::span<const Batch* const> batches) {
    // One batch (the usual case) is viewed where its records are.
    const smp_record* records = batches.size() == 1 ? batches[0]->records.data() : nullptr;
    size_t record_count = batches.size() == 1 ? batches[0]->records.size() : 0;
    for (const Batch* batch : batches) {
        if (batches.size() > 1) records_.insert(records_.end(), batch->records.begin(), batch->records.end());
        for (const auto& download : batch->downloads) downloads_.push_back(download.view());
    }
    if (batches.size() > 1) {
        records = records_.data();
        record_count = records_.size();
    }
    const Batch& last = *batches.back();
    batch_ = {sizeof batch_, records, record_count, downloads_.data(), downloads_.size(), last.origin, last.sequence};
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
    for (const auto& download : batch.downloads) out += static_cast<char>(client_class_byte(download.client_class));
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
        batch.downloads.push_back(std::move(*download));
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
    for (auto& download : batch.downloads) download.client_class = take_class();
    return batch;
}

}  // namespace smp
