#!/bin/sh
# fetch-verified URL SHA256 OUT: download URL to OUT and check its sha256 (the tool recipes' one download
# step). An empty SHA256 prints the checksum of what was downloaded, to be pinned, and warns.
set -eu
url=$1 sum=$2 out=$3
curl -fsSL -o "$out" "$url"
got=$(sha256sum "$out" | cut -d' ' -f1)
if [ -z "$sum" ]; then
    echo "warning: $url is not pinned; its sha256 is $got" >&2
elif [ "$got" != "$sum" ]; then
    echo "error: $url has sha256 $got, expected $sum" >&2
    exit 1
fi
