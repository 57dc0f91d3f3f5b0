#!/usr/bin/env bash
# Provision CPython 3.13 interpreters -- a regular (GIL) build and a
# free-threaded (--disable-gil) build -- for sqlitefair's benchmarks and CI.
#
# Why this exists: our machines reach package registries (PyPI, Debian's apt
# archives, npm) but nothing else, so python.org tarballs and prebuilt
# interpreters (pyenv, uv, python-build-standalone) cannot be downloaded.
# Debian's python3.13 *source* package can be, and its orig tarball is the
# CPython release tarball, so we fetch that with apt and build it ourselves.
#
# stdout carries only the result ("gil PATH" / "ft PATH", one per line);
# everything else goes to stderr. Run with --help for usage.
set -euo pipefail

readonly PROG=${0##*/}

# Debian source versions tried in order when --version is not given: the newest
# 3.13 in unstable, then the one in trixie (the stable release at the time of
# writing), as "VERSION SUITE" pairs.
readonly DEFAULT_CANDIDATES=("3.13.15-1 unstable" "3.13.5-2+deb13u5 trixie")
# Suites tried, in order, for a --version given without --suite.
readonly DEFAULT_SUITES=(unstable trixie)

# Our deb-src entry. It is removed again once the source is fetched, so that
# later plain `apt-get update` runs do not keep fetching its Sources index.
readonly APT_SOURCE_FILE=/etc/apt/sources.list.d/sqlitefair-src.sources

readonly BUILD_DEPS=(build-essential libssl-dev zlib1g-dev libbz2-dev
  libreadline-dev libsqlite3-dev libffi-dev liblzma-dev uuid-dev pkg-config)
# ssl: pip needs it; sqlite3: the library needs it; ctypes and zlib: pip and
# ensurepip need them. A build without any of these is useless to us.
readonly REQUIRED_MODULES=(ssl sqlite3 ctypes zlib)
# Nice to have; a warning only.
readonly OPTIONAL_MODULES=(bz2 lzma readline _uuid)

# Written last into a verified install: an install dir without it is not cached.
readonly STAMP=.sqlitefair-provisioned

WANT_GIL=0 WANT_FT=0 PRINT_ONLY=0
VERSION="" SUITE=""
ROOT=${SQLITEFAIR_PYTHON_CACHE:-$HOME/.cache/sqlitefair/pythons}
CANDIDATES=()
WORK="" WROTE_APT_SOURCE=0 STAGE=""
DEBVER="" TARBALL="" SRCDIR="" BUILT_EXE="" MISSING=()

usage() {
  cat <<EOF
Usage: $PROG [--gil] [--ft] [--version VERSION [--suite SUITE]]
          [--prefix-root DIR] [--print]

Build (or reuse cached) CPython 3.13 interpreters from Debian's python3.13
source package, and print "gil PATH" and/or "ft PATH" on stdout.

  --gil               build the regular interpreter (python3.13)
  --ft                build the free-threaded interpreter (python3.13t,
                      configure --disable-gil)
                      (neither given: both)
  --version VERSION   Debian source version of python3.13, e.g. 3.13.5-2+deb13u5
                      (default: 3.13.15-1 from unstable, falling back to
                      3.13.5-2+deb13u5 from trixie)
  --suite SUITE       Debian suite to fetch --version from
                      (default: try ${DEFAULT_SUITES[*]})
  --prefix-root DIR   where interpreters are installed, as DIR/<version>-gil
                      and DIR/<version>-ft (default: \$SQLITEFAIR_PYTHON_CACHE,
                      else \$HOME/.cache/sqlitefair/pythons)
  --print             only print interpreters already built; exit 1 if one
                      of the requested flavours is missing
  -h, --help          show this help

Building needs root and apt (apt-get source/install). Logs go to stderr and
to DIR/logs/.
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }
bad_usage() { log "$*"; usage >&2; exit 2; }

parse_args() {
  while (($#)); do
    case $1 in
      --gil) WANT_GIL=1 ;;
      --ft) WANT_FT=1 ;;
      --print) PRINT_ONLY=1 ;;
      --version|--suite|--prefix-root)
        if (($# < 2)) || [[ -z $2 ]]; then bad_usage "$1 needs a value"; fi
        case $1 in
          --version) VERSION=$2 ;;
          --suite) SUITE=$2 ;;
          --prefix-root) ROOT=$2 ;;
        esac
        shift ;;
      -h|--help) usage; exit 0 ;;
      *) bad_usage "unknown argument: $1" ;;
    esac
    shift
  done
  if ((!WANT_GIL && !WANT_FT)); then WANT_GIL=1 WANT_FT=1; fi
  [[ -z $SUITE || -n $VERSION ]] || bad_usage "--suite needs --version"

  local s
  if [[ -z $VERSION ]]; then
    CANDIDATES=("${DEFAULT_CANDIDATES[@]}")
  elif [[ -n $SUITE ]]; then
    CANDIDATES=("$VERSION $SUITE")
  else
    for s in "${DEFAULT_SUITES[@]}"; do CANDIDATES+=("$VERSION $s"); done
  fi
}

# --- interpreters -----------------------------------------------------------

# "1:3.13.5-2+deb13u5" -> "3.13.5": drop the epoch and the Debian revision.
upstream_version() {
  local v=${1#*:}
  printf '%s\n' "${v%-*}"
}

exe_name() { [[ $1 == ft ]] && echo python3.13t || echo python3.13; }
prefix_for() { echo "$ROOT/$2-$1"; }   # flavour, upstream version

# Run an interpreter unaffected by the caller's environment (PYTHONPATH,
# PYTHON_GIL=1, ...), which would otherwise make the checks lie.
run_python() {
  local exe=$1; shift
  env -u PYTHONHOME -u PYTHONPATH -u PYTHON_GIL "$exe" -I "$@"
}

# Succeeds if EXE runs, has the required modules, and has the GIL state its
# flavour promises. Prints the reason to stderr on failure unless QUIET=1.
check_interpreter() {
  local flavour=$1 exe=$2 want out
  [[ $flavour == ft ]] && want=False || want=True
  [[ -x $exe ]] || { [[ ${QUIET:-0} == 1 ]] || log "$exe: not found"; return 1; }
  local mods; mods=$(IFS=,; echo "${REQUIRED_MODULES[*]}")
  if ! out=$(run_python "$exe" -c "import sys, $mods; print(sys._is_gil_enabled())" 2>&1); then
    [[ ${QUIET:-0} == 1 ]] || log "$exe: cannot import one of ${REQUIRED_MODULES[*]}: $out"
    return 1
  fi
  if [[ $out != "$want" ]]; then
    [[ ${QUIET:-0} == 1 ]] || log "$exe: sys._is_gil_enabled() printed '$out', expected $want"
    return 1
  fi
}

describe() {
  run_python "$1" -c 'import sys, sqlite3
print("Python %s, SQLite %s" % (sys.version.split()[0], sqlite3.sqlite_version))'
}

# Path of a cached, working interpreter of FLAVOUR for any candidate version
# (first candidate wins), or nothing. Accepting the fallback keeps a second run
# fast even when the preferred version could not be fetched the first time.
find_cached() {
  local flavour=$1 cand prefix
  for cand in "${CANDIDATES[@]}"; do
    prefix=$(prefix_for "$flavour" "$(upstream_version "${cand%% *}")")
    [[ -f $prefix/$STAMP ]] || continue
    if QUIET=1 check_interpreter "$flavour" "$prefix/bin/$(exe_name "$flavour")"; then
      echo "$prefix/bin/$(exe_name "$flavour")"
      return 0
    fi
  done
}

# --- apt ----------------------------------------------------------------------

require_build_privileges() {
  local hint="or build interpreters elsewhere and pass them to the benchmarks with --python PATH"
  if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    die "building needs apt-get (a Debian-based machine); $hint"
  fi
  ((EUID == 0)) || die "building needs root (apt-get source/install); rerun as root, $hint"
}

pkg_installed() {
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

ensure_build_deps() {
  local missing=() p
  for p in "${BUILD_DEPS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  log "installing build dependencies: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Package lists may be missing or stale on a fresh machine: update and retry.
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
    apt-get update >&2
    apt-get install -y --no-install-recommends "${missing[@]}" >&2
  fi
}

# One line per apt source entry of this machine: "URIS<TAB>SUITES<TAB>SIGNED-BY".
list_apt_entries() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    # deb822: paragraphs of "Key: value"; continuation lines (an inline key)
    # and comments are skipped.
    awk '
      function flush() {
        if (uris != "" && types ~ /deb/ && enabled != "no") print uris "\t" suites "\t" signed
        uris = suites = signed = types = ""; enabled = "yes"
      }
      BEGIN { enabled = "yes" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ { next }
      {
        key = $0; sub(/:.*/, "", key); key = tolower(key)
        val = $0; sub(/^[^:]*:[ \t]*/, "", val)
        if (key == "types") types = val
        else if (key == "uris") uris = val
        else if (key == "suites") suites = val
        else if (key == "signed-by") signed = val
        else if (key == "enabled") enabled = tolower(val)
      }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    # One-line format: deb [opt=val ...] URI SUITE COMPONENT...
    awk '$1 == "deb" || $1 == "deb-src" {
      i = 2; signed = ""
      if ($2 ~ /^\[/) {
        for (; i <= NF; i++) {
          if ($i ~ /signed-by=/) { s = $i; sub(/.*signed-by=/, "", s); sub(/\]$/, "", s); signed = s }
          if ($i ~ /\]$/) { i++; break }
        }
      }
      print $i "\t" $(i + 1) "\t" signed
    }' "$f"
  done
}

# Print "URI<TAB>SIGNED-BY" of the machine's main Debian archive: an entry
# whose suites are the release itself (not -security), preferring the
# machine's own codename, then any Debian suite name, then any entry signed
# with Debian's archive keyring. Derived at run time so that the script never
# names a mirror itself.
main_archive() {
  local codename
  # shellcheck disable=SC1091  # the machine's own file, read at run time
  codename=$( (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || true)
  list_apt_entries | awk -F '\t' -v codename="$codename" '
    BEGIN {
      n = split("sid unstable testing stable oldstable forky trixie bookworm bullseye buster", d, " ")
      for (j = 1; j <= n; j++) debian[d[j]] = 1
    }
    {
      split($1, uris, " "); uri = uris[1]
      if ($2 ~ /-security/ || uri ~ /-security\/?$/) next
      score = 0; ns = split($2, suites, " ")
      for (j = 1; j <= ns; j++) {
        if (codename != "" && suites[j] == codename) score = 3
        else if (suites[j] in debian && score < 2) score = 2
      }
      if (score == 0 && $3 ~ /debian-archive-keyring/) score = 1
      if (score > best) { best = score; line = uri "\t" $3 }
    }
    END { if (best > 0) print line }'
}

write_apt_source() {
  local suite=$1 archive uri signed
  archive=$(main_archive)
  [[ -n $archive ]] || die "found no Debian archive entry in /etc/apt/sources.list{,.d/} to fetch source from"
  IFS=$'\t' read -r uri signed <<<"$archive"
  # Debian signs every suite with keys from debian-archive-keyring, so an
  # entry whose Signed-By is an inline key or absent can use that keyring.
  if [[ -z $signed || ! -f $signed ]] && [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]]; then
    signed=/usr/share/keyrings/debian-archive-keyring.gpg
  fi
  log "adding deb-src $uri $suite main to $APT_SOURCE_FILE"
  WROTE_APT_SOURCE=1
  {
    echo "# Written by sqlitefair's $PROG to fetch CPython's source; removed when it exits."
    echo "Types: deb-src"
    echo "URIs: $uri"
    echo "Suites: $suite"
    echo "Components: main"
    [[ -z $signed || ! -f $signed ]] || echo "Signed-By: $signed"
  } >"$APT_SOURCE_FILE"
}

remove_apt_source() {
  if ((WROTE_APT_SOURCE)); then rm -f "$APT_SOURCE_FILE"; WROTE_APT_SOURCE=0; fi
}

# apt-get restricted to our source file: updating only its index is much
# faster than a full update, and keeps the machine's other lists untouched.
apt_ours() {
  apt-get -o Dir::Etc::sourcelist="$APT_SOURCE_FILE" -o Dir::Etc::sourceparts=- \
    -o APT::Get::List-Cleanup=0 "$@"
}

# Fetch python3.13=DEBVER from SUITE into DEST; set TARBALL to the orig tarball.
fetch_source() {
  local debver=$1 suite=$2 dest=$3
  write_apt_source "$suite"
  log "apt-get update (only $APT_SOURCE_FILE)"
  apt_ours -q update >&2 || return 1
  log "apt-get source python3.13=$debver (from $suite)"
  # apt downloads as the unprivileged _apt user, which must be able to write
  # into DEST (else apt warns and downloads unsandboxed as root).
  chmod 0755 "$WORK" "$dest"
  if id -u _apt >/dev/null 2>&1; then chown _apt "$dest"; fi
  (cd "$dest" && apt_ours -q source --download-only --tar-only "python3.13=$debver") >&2 || return 1
  TARBALL=$(find "$dest" -maxdepth 1 -name 'python3.13_*.orig.tar.*' -print -quit)
  [[ -n $TARBALL ]] || { log "no orig tarball among: $(ls "$dest")"; return 1; }
}

# Try each candidate in turn; set DEBVER and TARBALL from the first fetched.
fetch_any_source() {
  local cand suite dest
  for cand in "${CANDIDATES[@]}"; do
    read -r DEBVER suite <<<"$cand"
    dest="$WORK/download-$suite"
    mkdir -p "$dest"
    fetch_source "$DEBVER" "$suite" "$dest" && return 0
    log "could not fetch python3.13=$DEBVER from $suite"
  done
  return 1
}

# --- build ----------------------------------------------------------------------

# Unpack TARBALL; set SRCDIR to its top directory.
extract_source() {
  local dir="$WORK/src"
  mkdir -p "$dir"
  tar -xf "$TARBALL" -C "$dir"
  SRCDIR=$(find "$dir" -mindepth 1 -maxdepth 1 -type d -print -quit)
  [[ -x $SRCDIR/configure ]] || die "$TARBALL does not look like CPython's source (no configure)"
}

# Build FLAVOUR from SRCDIR into ROOT/UPSTREAM-FLAVOUR; set BUILT_EXE.
# The install goes to a staging dir (make install DESTDIR=...) and is renamed
# into place only after it passed the checks, so an interrupted build never
# looks cached. The prefix itself is the final one so that paths baked into
# the install (pip's script shebangs, sysconfig) are right.
build_flavour() {
  local flavour=$1 upstream=$2
  local prefix builddir logfile staged_exe mod start=$SECONDS
  prefix=$(prefix_for "$flavour" "$upstream")
  BUILT_EXE="$prefix/bin/$(exe_name "$flavour")"
  builddir="$WORK/build-$flavour"
  logfile="$ROOT/logs/$upstream-$flavour.log"
  mkdir -p "$builddir" "$ROOT/logs"
  STAGE=$(mktemp -d "$ROOT/.stage-$upstream-$flavour.XXXXXX")   # same fs as prefix

  # No --enable-optimizations/--with-lto: PGO runs the test suite and LTO is
  # slow; the interpreters are compared with each other, built the same way.
  local configure_args=(--prefix="$prefix" --with-ensurepip=install)
  [[ $flavour == ft ]] && configure_args+=(--disable-gil)

  log "building $flavour $upstream (log: $logfile)"
  # Chained with && because set -e does not apply inside a `... ||` context.
  # Out-of-tree build: one extracted source serves both flavours.
  (cd "$builddir" &&
    "$SRCDIR/configure" "${configure_args[@]}" &&
    make -j"$(nproc)" &&
    make install DESTDIR="$STAGE") >"$logfile" 2>&1 || { tail -n 40 "$logfile" >&2; die "build of $flavour $upstream failed; see $logfile"; }

  staged_exe="$STAGE$prefix/bin/$(exe_name "$flavour")"
  check_interpreter "$flavour" "$staged_exe" ||
    die "$flavour build lacks a required module or has the wrong GIL state; see 'necessary bits' in $logfile"
  for mod in "${OPTIONAL_MODULES[@]}"; do
    run_python "$staged_exe" -c "import $mod" 2>/dev/null || log "warning: $flavour build has no $mod module"
  done
  run_python "$staged_exe" -m pip --version >/dev/null || die "$flavour build has no working pip"

  date -u +'built %Y-%m-%dT%H:%M:%SZ' >"$STAGE$prefix/$STAMP"
  rm -rf "$prefix"                # a stale, unverified install of this version
  mv "$STAGE$prefix" "$prefix"    # both under ROOT, so an atomic rename
  rm -rf "$STAGE"; STAGE=""
  check_interpreter "$flavour" "$BUILT_EXE" || die "$BUILT_EXE does not work after moving it into place"
  log "built $flavour in $((SECONDS - start))s: $BUILT_EXE ($(describe "$BUILT_EXE"))"
}

# --- main -----------------------------------------------------------------------

cleanup() {
  remove_apt_source
  if [[ -n $STAGE ]]; then rm -rf "$STAGE"; fi
  if [[ -n $WORK ]]; then rm -rf "$WORK"; fi
}

# Look up each requested flavour in the cache: FOUND[flavour]=PATH for the
# ones built, MISSING lists the others.
declare -A FOUND
lookup_cache() {
  local flavour exe
  FOUND=() MISSING=()
  for flavour in gil ft; do
    [[ $flavour == gil ]] && ((!WANT_GIL)) && continue
    [[ $flavour == ft ]] && ((!WANT_FT)) && continue
    exe=$(find_cached "$flavour")
    if [[ -n $exe ]]; then FOUND[$flavour]=$exe; else MISSING+=("$flavour"); fi
  done
}

print_found() {
  local flavour
  for flavour in gil ft; do
    [[ -z ${FOUND[$flavour]:-} ]] || echo "$flavour ${FOUND[$flavour]}"
  done
}

main() {
  parse_args "$@"
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd -P)   # printed paths must be absolute

  lookup_cache
  if ((PRINT_ONLY)); then
    print_found
    ((${#MISSING[@]} == 0)) || { log "not built yet: ${MISSING[*]}"; exit 1; }
    return 0
  fi
  if ((${#MISSING[@]} == 0)); then
    log "using cached interpreters under $ROOT"
    print_found
    return 0
  fi

  require_build_privileges
  # Serialise runs sharing a cache root; a waiting run then finds the cache.
  exec 9>"$ROOT/.lock"
  flock 9
  lookup_cache
  rm -rf "$ROOT"/.stage-*        # left by interrupted runs; we hold the lock
  trap cleanup EXIT
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/sqlitefair-python.XXXXXX")

  if ((${#MISSING[@]})); then
    ensure_build_deps
    fetch_any_source ||
      die "could not fetch python3.13 source for any of: ${CANDIDATES[*]}; pick one that 'apt-cache showsrc python3.13' lists, with --version and --suite"
    remove_apt_source   # not needed for the build; don't leave it around meanwhile
    extract_source
    local flavour upstream
    upstream=$(upstream_version "$DEBVER")
    for flavour in "${MISSING[@]}"; do
      build_flavour "$flavour" "$upstream"
      FOUND[$flavour]=$BUILT_EXE
    done
  fi
  print_found
}

main "$@"
