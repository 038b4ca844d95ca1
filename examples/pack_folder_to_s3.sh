#!/usr/bin/env bash
# Pack a folder of class sub-folders into sharded .rec/.idx files in a bucket.
#   examples/pack_folder_to_s3.sh IMAGE_FOLDER s3://bucket/prefix/train [SHARDS]
# The S3 endpoint comes from AWS_ENDPOINT_URL (botocore reads it; e.g. the loopback
# moto server), credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
set -euo pipefail
ROOT=${1:?image folder}; PREFIX=${2:?destination prefix, e.g. s3://bucket/train}; SHARDS=${3:-4}
CLOUDREC=${CLOUDREC:-cloudrec}
# 1. the image list, exactly as MXNet's im2rec --list makes it (labels = sub-folders),
#    written next to the shards: PREFIX.lst
"$CLOUDREC" im2rec --list --recursive "$PREFIX" "$ROOT"
# 2. pack in parallel straight into the bucket (temporary names, renamed when complete)
"$CLOUDREC" im2rec --num-thread 2 --num-shards "$SHARDS" --pass-through --no-progress "$PREFIX" "$ROOT"
# 3. what landed
"$CLOUDREC" inspect "${PREFIX}-*.rec"
