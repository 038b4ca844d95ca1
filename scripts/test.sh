#!/usr/bin/env bash
# Set up what the tests need (once), then run them:  bash scripts/test.sh [pytest args]
# Needs Debian with Python 3.11 (root, or the system packages below already there).
# Installs: Java 17 if missing, Debian's Jersey 1 jars (WebHDFS of the loopback HDFS),
# .venv with cloudrec[dev] + torch==2.13.0 (CPU), and the Hadoop 2.7.3 jars from the
# pyspark 2.4.8 sdist (cached in ~/.cache/cloudrec/hdfs); nginx-light (http:// tests) and azurite@3.37.0
# from npm (az:// tests, cached in ~/.cache/cloudrec/azurite). The S3 and HDFS test servers
# are started by the pytest fixtures on free 127.0.0.1 ports and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=2.13.0
t0=$SECONDS

# -- system packages ---------------------------------------------------------
apt_pkgs=()
command -v java >/dev/null 2>&1 || apt_pkgs+=(openjdk-17-jre-headless)
command -v setpriv >/dev/null 2>&1 || apt_pkgs+=(util-linux)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_pkgs+=(nginx-light)  # http:// tests
command -v npm >/dev/null 2>&1 || apt_pkgs+=(nodejs npm)  # azurite for the az:// tests
for p in libjersey1-server-java libjersey1-servlet-java libjersey1-core-java; do
  dpkg -s "$p" >/dev/null 2>&1 || apt_pkgs+=("$p")
done
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: please install: apt-get install ${apt_pkgs[*]}" >&2; exit 1
  fi
  echo "== apt-get install ${apt_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ] || apt-get update -q
  # no package may start a system service here (Debian's nginx would listen on port 80)
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  apt-get install -y -q --no-install-recommends "${apt_pkgs[@]}"
  if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# -- Python environment --------------------------------------------------------
[ -x "$VENV/bin/python" ] || { echo "== creating $VENV"; "$PY" -m venv "$VENV"; }
pip_install() {  # quiet pip; its full output only when it fails
  local log; log=$(mktemp)
  if ! "$VENV/bin/python" -m pip install -q "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; return 1; fi
  grep -v "is ignored: it is neither a file nor a directory" "$log" || true; rm -f "$log"
}
stamp="$VENV/.cloudrec-setup-done"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "== pip install -e '.[dev]' torch==$TORCH_VERSION"
  # the pyspark sdist's setup.py (HDFS jars, pip download --no-build-isolation) needs both;
  # >=77.0.3 is what torch 2.13 requires (a lower pin makes pip print a resolver ERROR);
  # <85: the pyspark 2.4.8 sdist was checked with setuptools 84.2.1
  pip_install "setuptools>=77.0.3,<85" wheel
  pip_install -e '.[dev]'
  pip_install "torch==$TORCH_VERSION"
  touch "$stamp"
fi
# Hadoop jars for the HDFS fixture: fetched once per machine, here so a failure shows early
"$VENV/bin/python" -c "from cloudrec.testing import hadoop_jars; print('== hadoop jars in', hadoop_jars())"
# azurite (npm) for the az:// tests: installed once per machine into ~/.cache/cloudrec/azurite
"$VENV/bin/python" -c "from cloudrec.testing.azurite import azurite_blob_script; print('== azurite at', azurite_blob_script())"
echo "== setup took $((SECONDS - t0)) s"

# -- tests -----------------------------------------------------------------------
set +e
# a hung test fails after CLOUDREC_TEST_TIMEOUT seconds instead of eating CI's time;
# CLOUDREC_TEST_WORKERS pytest-xdist processes (2: most tests wait on servers, sockets and
# child processes, so two share two cores well: 500 s instead of ~930 s; 0 runs in-process)
"$VENV/bin/python" -m pytest --durations=15 --timeout="${CLOUDREC_TEST_TIMEOUT:-300}" \
  -n "${CLOUDREC_TEST_WORKERS:-2}" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "scripts/test.sh: pytest collected no tests: counting that as a failure" >&2
  exit 1
fi
exit "$rc"  # nothing printed after pytest: its summary stays the last line
