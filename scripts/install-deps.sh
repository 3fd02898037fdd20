#!/usr/bin/env bash
# Installs what the lab and the tests need on a Debian machine: OpenSSH (client + server, used as real fixtures),
# systemd's tools (`systemd-analyze verify` on the shipped units, `systemd-socket-activate` to hand the daemon a
# listening socket the way systemd does; neither needs systemd running as PID 1), moto's EC2 server (the independent
# EC2 emulator) and shellcheck (the tests check the bastion's watchdog script). Idempotent; run as root or with sudo
# available.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh-keygen >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openssh-server openssh-client >/dev/null
fi
if ! command -v shellcheck >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi
if ! command -v systemd-analyze >/dev/null || ! command -v systemd-socket-activate >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
if ! command -v moto_server >/dev/null || ! python3 -c 'import moto, flask' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6'
fi
echo "deps: $(/usr/sbin/sshd -V 2>&1 | head -1), $(systemd-analyze --version | head -1), moto $(python3 -c 'import moto; print(moto.__version__)'), shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
