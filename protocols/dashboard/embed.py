#!/usr/bin/env python3
"""Writes the C++ source that holds the dashboard's page files.

Usage: embed.py OUTPUT FILE...  Each file is served at "/<its name>" with
the content type of its extension; index.html also at "/". The bytes are
written as an array, so that nothing in a file can end a literal.
"""
import os
import sys

TYPES = {
    '.html': 'text/html; charset=utf-8',
    '.js': 'text/javascript; charset=utf-8',
    '.css': 'text/css; charset=utf-8',
    '.svg': 'image/svg+xml',
}


def main():
    output, inputs = sys.argv[1], sys.argv[2:]
    lines = ['// Written by embed.py from protocols/dashboard/page: do not edit.',
             '#include "page_files.hpp"', '', 'namespace smp::dashboard {', 'namespace {']
    entries = []
    for i, path in enumerate(inputs):
        with open(path, 'rb') as f:
            data = f.read()
        name = os.path.basename(path)
        kind = TYPES.get(os.path.splitext(name)[1], 'application/octet-stream')
        lines.append(f'const unsigned char file{i}[] = {{')
        for at in range(0, len(data), 24):
            lines.append('    ' + ', '.join(str(b) for b in data[at:at + 24]) + ',')
        lines.append('};')
        entries.append(f'    {{"/{name}", "{kind}", file{i}, {len(data)}}},')
    lines += ['}  // namespace', '', 'const PageFile kPageFiles[] = {'] + entries + ['};',
              f'const size_t kPageFileCount = {len(entries)};', '', '}  // namespace smp::dashboard', '']
    with open(output, 'w') as f:
        f.write('\n'.join(lines))


if __name__ == '__main__':
    main()
