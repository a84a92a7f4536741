#include "geoip.hpp"

#include <maxminddb.h>

#include <charconv>
#include <vector>

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

namespace smp {
namespace {

// The entry at `path` (NULL-terminated), if it holds data of `type`.
bool value_at(MMDB_entry_s& entry, uint32_t type, MMDB_entry_data_s& data, const char* const* path) {
    return MMDB_aget_value(&entry, &data, path) == MMDB_SUCCESS && data.has_data && data.type == type;
}

std::string text_at(MMDB_entry_s& entry, const char* const* path) {
    MMDB_entry_data_s data{};
    if (!value_at(entry, MMDB_DATA_TYPE_UTF8_STRING, data, path)) return {};
    return std::string(data.utf8_string, data.data_size);
}

}  // namespace

void GeoIp::Closer::operator()(MMDB_s* db) const noexcept {
    MMDB_close(db);
    delete db;
}

GeoIp::Database GeoIp::open(const std::string& path, const char* what) {
    if (path.empty()) return nullptr;
    auto db = std::make_unique<MMDB_s>();
    const int status = MMDB_open(path.c_str(), MMDB_MODE_MMAP, db.get());
    if (status != MMDB_SUCCESS) {
        spdlog::warn("geoip.{}: cannot open {}: {}; that part of the geo fields stays empty", what, path,
                     MMDB_strerror(status));
        return nullptr;
    }
    return Database(db.release());
}

GeoIp::GeoIp(const std::string& city_db, const std::string& asn_db)
    : city_(open(city_db, "city_db")), asn_(open(asn_db, "asn_db")) {
    if (city_db.empty() && asn_db.empty())
        spdlog::warn("geoip: no database configured; downloads carry no country, city or ASN");
}

GeoInfo GeoIp::lookup(const std::string& ip) const {
    GeoInfo info;
    int gai_error = 0;
    int mmdb_error = 0;
    if (city_) {
        auto result = MMDB_lookup_string(city_.get(), ip.c_str(), &gai_error, &mmdb_error);
        if (gai_error == 0 && mmdb_error == MMDB_SUCCESS && result.found_entry) {
            static const char* const country[] = {"country", "iso_code", nullptr};
            static const char* const city[] = {"city", "names", "en", nullptr};
            static const char* const latitude[] = {"location", "latitude", nullptr};
            static const char* const longitude[] = {"location", "longitude", nullptr};
            info.country = text_at(result.entry, country);
            info.city = text_at(result.entry, city);
            MMDB_entry_data_s lat{};
            MMDB_entry_data_s lon{};
            if (value_at(result.entry, MMDB_DATA_TYPE_DOUBLE, lat, latitude) &&
                value_at(result.entry, MMDB_DATA_TYPE_DOUBLE, lon, longitude)) {
                info.latitude = lat.double_value;
                info.longitude = lon.double_value;
                info.has_location = true;
            }
        }
    }
    if (asn_) {
        auto result = MMDB_lookup_string(asn_.get(), ip.c_str(), &gai_error, &mmdb_error);
        if (gai_error == 0 && mmdb_error == MMDB_SUCCESS && result.found_entry) {
            static const char* const number[] = {"autonomous_system_number", nullptr};
            static const char* const organisation[] = {"autonomous_system_organization", nullptr};
            MMDB_entry_data_s data{};
            if (value_at(result.entry, MMDB_DATA_TYPE_UINT32, data, number)) info.asn = data.uint32;
            info.organisation = text_at(result.entry, organisation);
        }
    }
    return info;
}

// Fields split by the ASCII unit separator, which no name holds:
// country, city, organisation, asn, then latitude and longitude when known.
namespace {
constexpr char kSeparator = '\x1f';
}

std::string encode_geo(const GeoInfo& geo) {
    std::string text =
        geo.country + kSeparator + geo.city + kSeparator + geo.organisation + kSeparator + std::to_string(geo.asn);
    if (geo.has_location) text += fmt::format("{}{:.6f}{}{:.6f}", kSeparator, geo.latitude, kSeparator, geo.longitude);
    return text;
}

std::optional<GeoInfo> decode_geo(std::string_view text) {
    std::vector<std::string_view> fields;
    for (size_t start = 0;;) {
        const size_t end = text.find(kSeparator, start);
        fields.push_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
        if (end == std::string_view::npos) break;
        start = end + 1;
    }
    if (fields.size() != 4 && fields.size() != 6) return std::nullopt;
    GeoInfo geo{
        .country = std::string(fields[0]), .city = std::string(fields[1]), .organisation = std::string(fields[2])};
    const auto number = [](std::string_view field, auto& out) {
        const auto [end, error] = std::from_chars(field.data(), field.data() + field.size(), out);
        return error == std::errc() && end == field.data() + field.size();
    };
    if (!number(fields[3], geo.asn)) return std::nullopt;
    if (fields.size() == 6) {
        if (!number(fields[4], geo.latitude) || !number(fields[5], geo.longitude)) return std::nullopt;
        geo.has_location = true;
    }
    return geo;
}

}  // namespace smp
