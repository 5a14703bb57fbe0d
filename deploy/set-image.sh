#!/usr/bin/env bash
# Point deploy/k8s at the images you pushed: rewrites the `mtl-pipeline` entry of `images:` in k8s/mlflow
# (what `kustomize edit set image mtl-pipeline=IMAGE` does there) and, given a second image, the `mtl-serving`
# entry in k8s/serving (the slim serving image, deploy/Dockerfile's `serving` target).
#   deploy/set-image.sh registry.example.com/ml/mtl-pipeline:0.1.0-1a2b3c4d5e6f [registry.example.com/ml/mtl-serving:TAG]
#   deploy/set-image.sh registry.example.com/ml/mtl-pipeline@sha256:...
set -euo pipefail
IMAGE="${1:-${MTLP_IMAGE:-}}"
SERVING_IMAGE="${2:-${MTLP_SERVING_IMAGE:-}}"
[ -n "$IMAGE" ] || { echo "usage: $0 IMAGE [SERVING_IMAGE] (or set MTLP_IMAGE, MTLP_SERVING_IMAGE)" >&2; exit 64; }
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/k8s"

set_image() {  # set_image KUSTOMIZATION ENTRY IMAGE
    local k="$1" entry="$2" image="$3" name field value
    if [[ "$image" == *@sha256:* ]]; then
        name="${image%@*}"; field=digest; value="${image#*@}"
    elif [[ "${image##*/}" == *:* ]]; then
        name="${image%:*}"; field=newTag; value="${image##*:}"
    else
        echo "$image has no tag or digest: pin one" >&2; exit 64
    fi
    # Inside the `- name: ENTRY` item: replace newName and the tag/digest line.
    sed -i -E "/^  - name: ${entry}\$/,/^  - name: /{
        s#^(    newName: ).*#\\1${name}#
        s#^    (newTag|digest): .*#    ${field}: ${value}#
    }" "$k"
    echo "$k: $entry -> $image"
}

set_image "$DIR/mlflow/kustomization.yaml" mtl-pipeline "$IMAGE"
if [ -n "$SERVING_IMAGE" ]; then
    set_image "$DIR/serving/kustomization.yaml" mtl-serving "$SERVING_IMAGE"
fi
