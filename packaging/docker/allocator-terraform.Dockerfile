# syntax=docker/dockerfile:1
#
# LabLink allocator for the `terraform` provider: `lablink` plus Terraform (launches and
# destroys the AWS client VMs) and the OpenSSH client (reboots VMs and fetches
# participants' files from them).
#
# Why this image is not FROM scratch like allocator.Dockerfile: Terraform is a static Go
# binary, but `ssh` is dynamically linked against glibc, libcrypto, zlib, GSSAPI, ... and
# reads /etc/ssh/ssh_config; copying it with its libraries out of a distribution would be
# a hand-made, unpatchable copy of Debian. So the final stage is debian:bookworm-slim
# with only openssh-client and ca-certificates added, and gets Debian's security updates
# on every rebuild.
#
# Build from the repository root after `scripts/dist.sh --out dist`:
#   docker build -f packaging/docker/allocator-terraform.Dockerfile -t lablink-allocator-terraform .
# See packaging/docker/README.md.

# Terraform, fetched from HashiCorp's releases and checked against the published SHA-256
# of terraform_<version>_linux_amd64.zip (from terraform_<version>_SHA256SUMS). Changing
# TERRAFORM_VERSION needs the matching TERRAFORM_SHA256.
# Pinned by tag; pin by digest too when publishing (debian:bookworm-slim@sha256:...).
FROM debian:bookworm-slim AS terraform

ARG TERRAFORM_VERSION=1.11.4
ARG TERRAFORM_SHA256=1ce994251c00281d6845f0f268637ba50c0005657eb3cf096b92f753b42ef4dc

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl unzip \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /tmp/terraform
RUN curl -fsSL --proto '=https' --tlsv1.2 -o terraform.zip \
        "https://releases.hashicorp.com/terraform/${TERRAFORM_VERSION}/terraform_${TERRAFORM_VERSION}_linux_amd64.zip" \
    && echo "${TERRAFORM_SHA256}  terraform.zip" | sha256sum -c - \
    && unzip -q terraform.zip terraform \
    && install -m 0755 terraform /usr/local/bin/terraform \
    && /usr/local/bin/terraform version


# Pinned by tag; pin by digest too when publishing (debian:bookworm-slim@sha256:...).
FROM debian:bookworm-slim

ARG VERSION=dev
ARG REVISION=unknown

LABEL org.opencontainers.image.title="lablink-allocator-terraform" \
      org.opencontainers.image.description="LabLink allocator (lablink serve) with Terraform and OpenSSH for the terraform provider" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates openssh-client \
    && rm -rf /var/lib/apt/lists/*

# Unprivileged user. Its home is the data directory so that terraform and ssh find a
# writable $HOME; lablink itself points them at known_hosts and the provider cache below
# the data directory.
RUN groupadd --system --gid 10001 lablink \
    && useradd --system --uid 10001 --gid lablink --home-dir /var/lib/lablink \
        --shell /usr/sbin/nologin --no-create-home lablink \
    && install -d -o lablink -g lablink -m 0700 /var/lib/lablink \
    && install -d -m 0755 /etc/lablink

COPY --from=terraform /usr/local/bin/terraform /usr/local/bin/terraform
COPY --chmod=0755 dist/lablink-x86_64-unknown-linux-musl /usr/local/bin/lablink
# The glibc build, for VMs to run as their agent (NVML is loaded with dlopen, which a
# static musl executable cannot do).
COPY --chmod=0755 dist/lablink-x86_64-unknown-linux-gnu /usr/local/bin/lablink-agent

# CHECKPOINT_DISABLE: Terraform does not call HashiCorp's version-check service.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    LABLINK_SERVER_LISTEN=0.0.0.0:5000 \
    LABLINK_SERVER_DATA_DIR=/var/lib/lablink \
    LABLINK_PROVISION_PROVIDER=terraform \
    CHECKPOINT_DISABLE=1

VOLUME ["/var/lib/lablink"]
EXPOSE 5000

# No HEALTHCHECK, as in allocator.Dockerfile: there is no HTTP client in the image.
# Orchestrators should probe GET /health on port 5000.

USER 10001:10001
WORKDIR /var/lib/lablink

ENTRYPOINT ["/usr/local/bin/lablink"]
CMD ["serve"]
