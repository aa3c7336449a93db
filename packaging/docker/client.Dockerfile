# syntax=docker/dockerfile:1
#
# LabLink client desktop: the image each GPU VM runs (terraform/client-vm/user_data.sh.tftpl
# starts it with --network host, the GPUs, the allocator's `lablink` bind-mounted over
# /usr/local/bin/lablink and the VM's credential mounted read-only). Its entry point is
# `lablink agent --desktop-user client`: the agent runs as root, registers the VM, waits for
# a participant and starts Chrome Remote Desktop for them as the user `client`, who can read
# neither the credential nor the agent's environment.
#
# Contents: CUDA runtime (Ubuntu 24.04: the glibc agent needs glibc >= 2.36), an XFCE
# desktop, Chrome Remote Desktop, TigerVNC's Xvnc (browser desktops: the agent starts it on
# display :1 with XFCE for a browser seat, bound to loopback, with a fresh password per
# participant), Google Chrome, git, and the workshop software (SLEAP by default) in a
# virtual environment at /home/client/.venv.
#
# Build from the repository root after `scripts/dist.sh --out dist`:
#   docker build -f packaging/docker/client.Dockerfile -t lablink-client .
#   docker build -f packaging/docker/client.Dockerfile \
#     --build-arg SOFTWARE=mytool --build-arg SOFTWARE_PIP_SPEC='mytool==2.0' -t lablink-client-mytool .
# See packaging/docker/README.md.

# uv, copied in below to install the workshop software (and left for participants).
FROM ghcr.io/astral-sh/uv:0.13.0@sha256:cdc6093146eb3ff6a40107b38f008b789e050e77ad87865e381d9917da55a168 AS uv


# Pinned by tag; pin by digest too when publishing (nvidia/cuda:...@sha256:...).
FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04

ARG VERSION=dev
ARG REVISION=unknown
# The process name that means the software is in use (the agent's SUBJECT_SOFTWARE
# default; the VM's boot script passes the allocator's `machine.software` over it).
ARG SOFTWARE=sleap
# What `uv pip install` installs into /home/client/.venv; empty installs nothing.
ARG SOFTWARE_PIP_SPEC="sleap[nn]==1.6.6"
ARG DEBIAN_FRONTEND=noninteractive

LABEL org.opencontainers.image.title="lablink-client" \
      org.opencontainers.image.description="LabLink client desktop: XFCE, Chrome Remote Desktop and ${SOFTWARE}, run by lablink agent" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="BSD-3-Clause"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Desktop, X11/OpenGL/Qt libraries for the workshop software's GUI, and tools.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates curl git git-lfs gnupg zip unzip psmisc procps less nano \
        xfce4 xfce4-terminal xfce4-taskmanager mousepad ristretto \
        dbus-x11 xscreensaver xvfb xserver-xorg-video-dummy x11-xserver-utils x11-utils \
        tigervnc-standalone-server \
        xdg-utils fonts-dejavu-core fonts-liberation fontconfig \
        python3 \
        libgl1 libegl1 libopengl0 libglx-mesa0 libegl-mesa0 libvulkan1 \
        libglib2.0-0t64 libdbus-1-3 libfontconfig1 libfreetype6 libsm6 libxext6 \
        libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 \
        libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 \
        libxcb-xkb1 libxrender1 libxrandr2 libxfixes3 libxi6 libxtst6 libxcomposite1 \
        libxdamage1 \
    && rm -rf /var/lib/apt/lists/*

# Chrome Remote Desktop and Google Chrome, from Google's .deb files (apt resolves their
# dependencies). CRD's post-install script adds the system user `_crd_network`, so
# adduser must accept a leading underscore.
WORKDIR /tmp/google
RUN echo 'NAME_REGEX_SYSTEM="^[a-z_][-a-z0-9_]*$"' >> /etc/adduser.conf \
    && curl -fsSL --proto '=https' --tlsv1.2 -o chrome-remote-desktop.deb \
        https://dl.google.com/linux/direct/chrome-remote-desktop_current_amd64.deb \
    && curl -fsSL --proto '=https' --tlsv1.2 -o google-chrome.deb \
        https://dl.google.com/linux/direct/google-chrome-stable_current_amd64.deb \
    && apt-get update \
    && apt-get install -y --no-install-recommends ./chrome-remote-desktop.deb ./google-chrome.deb \
    && rm -rf /var/lib/apt/lists/* /tmp/google \
    && test -x /opt/google/chrome-remote-desktop/start-host \
    && test -x /opt/google/chrome-remote-desktop/chrome-remote-desktop
WORKDIR /

COPY packaging/docker/client/chrome-remote-desktop-session /etc/chrome-remote-desktop-session
COPY --chmod=0755 packaging/docker/client/google-chrome /usr/bin/google-chrome
COPY --chmod=0755 packaging/docker/client/google-chrome /usr/bin/google-chrome-stable
COPY packaging/docker/client/lablink-software.sh /etc/profile.d/lablink-software.sh

# The desktop user `client` (uid 1000, upstream's name: the allocator fetches participants'
# files from /home/client/Desktop). Ubuntu's image ships `ubuntu` with uid 1000; it goes.
# Group: chrome-remote-desktop (required by CRD). No sudo, and not in adm: the VM's boot log
# is the agent's (root) to read and ship. The participant's desktop runs with no more rights
# than it needs. The agent's state is root's, outside the desktop user's reach.
RUN if id ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
    && groupadd --gid 1000 client \
    && useradd --create-home --uid 1000 --gid client --shell /bin/bash \
        --groups chrome-remote-desktop client \
    && install -d -o client -g client -m 0755 /home/client/Desktop \
    && install -d -o client -g client -m 0700 /home/client/.config \
        /home/client/.config/chrome-remote-desktop /home/client/.local \
    && install -d -m 0700 /var/lib/lablink-agent \
    && install -d -m 0755 /run/user \
    && install -d -o client -g client -m 0700 /run/user/1000 \
    && echo '. /etc/profile.d/lablink-software.sh' >> /etc/bash.bashrc

COPY --from=uv /uv /uvx /usr/local/bin/

# The workshop software is installed as `client`, who owns it. By name, so that its groups
# come from the image's /etc/group.
# hadolint ignore=DL3066
USER client
# The workshop software, in a virtual environment the participant owns (they may add
# packages to it), on Ubuntu's Python.
WORKDIR /home/client
# --seed adds pip, for participants who type `pip install`.
RUN export UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1 \
    && uv venv --seed --python /usr/bin/python3 /home/client/.venv \
    && if [ -n "${SOFTWARE_PIP_SPEC}" ]; then \
        uv pip install --python /home/client/.venv/bin/python "${SOFTWARE_PIP_SPEC}"; \
    fi

# The agent. At run time the VM bind-mounts the allocator's own copy over this file, so
# the agent always matches the allocator; this copy serves `docker run` without the mount.
COPY --chmod=0755 dist/lablink-x86_64-unknown-linux-gnu /usr/local/bin/lablink

# NVIDIA_DRIVER_CAPABILITIES=all: compute and utility (CUDA, NVML) plus graphics and
# video for the desktop's applications.
ENV NVIDIA_DRIVER_CAPABILITIES=all \
    PATH="/home/client/.venv/bin:${PATH}" \
    LANG=C.UTF-8 \
    SUBJECT_SOFTWARE="${SOFTWARE}" \
    LABLINK_START_HOST=/opt/google/chrome-remote-desktop/start-host \
    LABLINK_CRD_DAEMON=/opt/google/chrome-remote-desktop/chrome-remote-desktop \
    LABLINK_CRD_CONFIG_DIR=/home/client/.config/chrome-remote-desktop \
    LABLINK_VNC=xvnc \
    LABLINK_VNC_DISPLAY=:1 \
    LABLINK_VNC_SESSION=/usr/bin/startxfce4 \
    LABLINK_AGENT_STATE_DIR=/var/lib/lablink-agent

# The agent runs as root so that its credential is out of the desktop's reach; start-host,
# the CRD daemon, the tutorial clone and the lab's startup script run as `client` (its uid
# and groups, its USER/HOME/XDG_RUNTIME_DIR, an environment without the credential): Chrome
# Remote Desktop refuses root.
# hadolint ignore=DL3002,DL3066
USER root
# The agent reads ALLOCATOR_URL, API_TOKEN_FILE (the VM's credential file; API_TOKEN for a
# container run by hand), VM_NAME, SUBJECT_SOFTWARE, CLOUD_INIT_LOG_GROUP and
# LABLINK_BOOT_STARTED_AT from the environment; CMD ships the VM's boot log (a missing file
# is waited for, not an error).
ENTRYPOINT ["/usr/local/bin/lablink", "agent", "--desktop-user", "client"]
CMD ["--log-file", "/var/log/cloud-init-output.log"]
