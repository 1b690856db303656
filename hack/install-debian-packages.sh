#!/usr/bin/env bash
# Install the Debian 12 packages behind the local backend servers (Slurm + munge + MariaDB, slapd,
# Orthanc + DICOMweb, openssl; sshd + dnsmasq + iproute2 for the FederatedNode test hosts in network
# namespaces). Idempotent and non-interactive: a fast no-op when everything is present,
# `apt-get update` only when something is missing, and a temporary policy-rc.d so that post-install
# scripts start no daemon (hack/localenv starts them itself, on loopback, under a run directory).
set -euo pipefail

PACKAGES=(
  slurm-wlm slurmdbd slurm-client munge
  mariadb-server mariadb-client
  slapd ldap-utils
  orthanc orthanc-dicomweb
  openssl
  openssh-server dnsmasq-base iproute2 util-linux
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
  [[ "$status" == ii* ]] || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-debian-packages: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-debian-packages: missing ${missing[*]}; run as root (or: sudo $0)" >&2
  exit 1
fi

echo "install-debian-packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  created_policy=1
fi
cleanup() { if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT

# Wait for a concurrent apt/dpkg run (another engineer's script) instead of failing on the lock.
apt_opts=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
apt-get "${apt_opts[@]}" update -qq
apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${missing[@]}"
echo "install-debian-packages: done"
