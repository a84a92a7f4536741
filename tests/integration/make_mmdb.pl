# Writes the small MaxMind databases the geo tests read (Debian libmaxmind-db-writer-perl):
#   perl make_mmdb.pl city OUT.mmdb   203.0.113.0/24 -> FR, Paris, 48.8566 2.3522
#   perl make_mmdb.pl asn OUT.mmdb    203.0.113.0/24 -> AS64500 "Example Transit"
use strict; use warnings;
use MaxMind::DB::Writer::Tree;
my ($kind, $out) = @ARGV;
my %types = (
  country => 'map', iso_code => 'utf8_string', city => 'map', names => 'map', en => 'utf8_string',
  location => 'map', latitude => 'double', longitude => 'double',
  autonomous_system_number => 'uint32', autonomous_system_organization => 'utf8_string',
);
my $tree = MaxMind::DB::Writer::Tree->new(
  ip_version => 6, record_size => 24, database_type => $kind eq 'asn' ? 'GeoLite2-ASN' : 'GeoLite2-City',
  languages => ['en'], description => { en => 'SMProtocol test data' },
  map_key_type_callback => sub { $types{ $_[0] } }, merge_strategy => 'none',
  alias_ipv6_to_ipv4 => 1,
  remove_reserved_networks => 0,  # 203.0.113.0/24 is TEST-NET-3, reserved for documentation and tests
);
if ($kind eq 'asn') {
  $tree->insert_network('203.0.113.0/24', { autonomous_system_number => 64500, autonomous_system_organization => 'Example Transit' });
} else {
  $tree->insert_network('203.0.113.0/24', { country => { iso_code => 'FR' }, city => { names => { en => 'Paris' } },
                                             location => { latitude => 48.8566, longitude => 2.3522 } });
}
open my $fh, '>:raw', $out or die; $tree->write_tree($fh); close $fh;
