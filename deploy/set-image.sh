#!/usr/bin/env bash
# Point deploy/k8s at the project image you pushed: rewrites the `mtl-pipeline` entry of `images:` in
# k8s/mlflow and k8s/serving (what `kustomize edit set image mtl-pipeline=IMAGE` does there).
#   deploy/set-image.sh registry.example.com/ml/mtl-pipeline:0.1.0-1a2b3c4d5e6f
#   deploy/set-image.sh registry.example.com/ml/mtl-pipeline@sha256:...
set -euo pipefail
IMAGE="${1:-${MTLP_IMAGE:-}}"
[ -n "$IMAGE" ] || { echo "usage: $0 IMAGE (or set MTLP_IMAGE)" >&2; exit 64; }
if [[ "$IMAGE" == *@sha256:* ]]; then
    name="${IMAGE%@*}"; field=digest; value="${IMAGE#*@}"
elif [[ "${IMAGE##*/}" == *:* ]]; then
    name="${IMAGE%:*}"; field=newTag; value="${IMAGE##*:}"
else
    echo "$IMAGE has no tag or digest: pin one" >&2; exit 64
fi
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/k8s"
for k in "$DIR/mlflow/kustomization.yaml" "$DIR/serving/kustomization.yaml"; do
    # Inside the `- name: mtl-pipeline` item: replace newName and the tag/digest line.
    sed -i -E "/^  - name: mtl-pipeline\$/,/^  - name: /{
        s#^(    newName: ).*#\\1${name}#
        s#^    (newTag|digest): .*#    ${field}: ${value}#
    }" "$k"
    echo "$k: mtl-pipeline -> $IMAGE"
done
