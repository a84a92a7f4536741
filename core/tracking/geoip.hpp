// Geo-location and ASN of client addresses, from MaxMind databases
// (libmaxminddb): a City database and an ASN database, both optional.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

struct MMDB_s;  // maxminddb.h stays in geoip.cpp

namespace smp {

struct GeoInfo {
    std::string country;  // ISO 3166-1 alpha-2, "FR"
    std::string city;     // English name
    double latitude = 0;
    double longitude = 0;
    bool has_location = false;
    uint32_t asn = 0;
    std::string organisation;
};

// A GeoInfo as one text, to carry it with a record (privacy.anonymize_ip:
// the worker looks the whole address up and sends the place along with the
// shortened one). Never empty: an empty text is "not looked up".
std::string encode_geo(const GeoInfo& geo);
// The GeoInfo encode_geo made; empty when `text` is not one.
std::optional<GeoInfo> decode_geo(std::string_view text);

class GeoIp {
   public:
    // Opens what is configured; a path that is empty is skipped, one that
    // cannot be opened is logged once as a warning and skipped.
    GeoIp(const std::string& city_db, const std::string& asn_db);
    GeoInfo lookup(const std::string& ip) const;
    bool enabled() const { return city_ || asn_; }

   private:
    struct Closer {
        void operator()(MMDB_s* db) const noexcept;
    };
    using Database = std::unique_ptr<MMDB_s, Closer>;
    static Database open(const std::string& path, const char* what);

    Database city_;
    Database asn_;
};

}  // namespace smp
