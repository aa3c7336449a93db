# syntax=docker/dockerfile:1
#
# LabLink allocator: the static (musl) `lablink` executable alone on an empty image.
# Providers: `manual` and `local`. The `terraform` provider needs terraform and ssh:
# use allocator-terraform.Dockerfile.
#
# Build from the repository root after `scripts/dist.sh --out dist`:
#   docker build -f packaging/docker/allocator.Dockerfile -t lablink-allocator .
# See packaging/docker/README.md.

# This stage only assembles files for the final one: CA roots, a passwd/group entry for
# the unprivileged user, and the empty directories the final image needs. Nothing from it
# runs in the image.
# Pinned by tag; pin by digest too when publishing (debian:bookworm-slim@sha256:...).
FROM debian:bookworm-slim AS rootfs

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN mkdir -p /rootfs/etc/ssl/certs /rootfs/etc/lablink /rootfs/var/lib/lablink /rootfs/tmp \
    && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ \
    && printf 'lablink:x:10001:10001:LabLink:/var/lib/lablink:/sbin/nologin\n' > /rootfs/etc/passwd \
    && printf 'lablink:x:10001:\n' > /rootfs/etc/group \
    && chmod 0644 /rootfs/etc/passwd /rootfs/etc/group /rootfs/etc/ssl/certs/ca-certificates.crt \
    && chmod 0700 /rootfs/var/lib/lablink \
    && chmod 1777 /rootfs/tmp


FROM scratch

ARG VERSION=dev
ARG REVISION=unknown

LABEL org.opencontainers.image.title="lablink-allocator" \
      org.opencontainers.image.description="LabLink allocator (lablink serve): participant page, agent API, embedded store; manual and local providers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"

COPY --from=rootfs /rootfs/etc/ /etc/
COPY --from=rootfs /rootfs/tmp /tmp
# Owned by the runtime user so a new named volume mounted here inherits the ownership.
COPY --from=rootfs --chown=10001:10001 /rootfs/var/lib/lablink /var/lib/lablink

# The allocator itself: statically linked, needs nothing from the image but CA roots.
COPY --chmod=0755 dist/lablink-x86_64-unknown-linux-musl /usr/local/bin/lablink
# The glibc build, for VMs to run as their agent (NVML is loaded with dlopen, which a
# static musl executable cannot do).
COPY --chmod=0755 dist/lablink-x86_64-unknown-linux-gnu /usr/local/bin/lablink-agent

ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    LABLINK_SERVER_LISTEN=0.0.0.0:5000 \
    LABLINK_SERVER_DATA_DIR=/var/lib/lablink

VOLUME ["/var/lib/lablink"]
EXPOSE 5000

# No HEALTHCHECK: the image has no shell and no HTTP client to run one. Orchestrators
# should probe GET /health on port 5000 (Kubernetes httpGet probe, a load balancer's
# target-group check, ...).

USER 10001:10001
WORKDIR /var/lib/lablink

ENTRYPOINT ["/usr/local/bin/lablink"]
CMD ["serve"]
