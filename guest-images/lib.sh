# shellcheck shell=bash
# Helpers shared by guest-images/build.sh and tests/testhost/run.sh: fetching
# Debian packages into a cache and assembling initramfs trees. Sourced, not run.

QLITE_ROOT=${QLITE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
QLITE_PKG_CACHE=${QLITE_PKG_CACHE:-$QLITE_ROOT/build/pkgcache}

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Run an apt query; on an empty answer refresh the package lists once (fresh
# containers and CI images often ship without lists).
_apt_updated=0
apt_retry() {
    local out
    out=$("$@" 2>/dev/null || true)
    if [[ -z $out && $_apt_updated == 0 ]]; then
        log "no answer from '$*'; running apt-get update"
        apt-get update -qq >&2 || log "apt-get update failed"
        _apt_updated=1
        out=$("$@" 2>/dev/null || true)
    fi
    printf '%s' "$out"
}

# Kernel ABI version (e.g. 6.1.0-56-cloud-amd64) that the metapackage points
# at. QLITE_KERNEL_VERSION pins it (offline rebuilds, bisecting a kernel).
kernel_version() {
    if [[ -n ${QLITE_KERNEL_VERSION:-} ]]; then
        echo "$QLITE_KERNEL_VERSION"; return
    fi
    local v
    v=$(apt_retry apt-cache depends linux-image-cloud-amd64 |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9].*-cloud-amd64$/ {
                 sub(/^linux-image-/, "", $2); print $2; exit }')
    [[ -n $v ]] || die "cannot resolve linux-image-cloud-amd64's kernel version"
    echo "$v"
}

pkg_version() {
    apt_retry apt-cache show --no-all-versions "$1" |
        awk '/^Version:/ { print $2; exit }'
}

# fetch_pkg PKG -> prints the directory holding the package's extracted files.
# Uses `apt-get download` + `dpkg-deb -x`: nothing is installed on the host.
fetch_pkg() {
    local pkg=$1 ver dir deb
    ver=$(pkg_version "$pkg")
    [[ -n $ver ]] || die "package $pkg not known to apt"
    dir=$QLITE_PKG_CACHE/${pkg}_${ver//:/%3a}
    if [[ ! -e $dir/.done ]]; then
        mkdir -p "$QLITE_PKG_CACHE/debs"
        deb=$(find "$QLITE_PKG_CACHE/debs" -name "${pkg}_*${ver#*:}_*.deb" -print -quit)
        if [[ -z $deb ]]; then
            log "downloading $pkg=$ver"
            # _apt cannot write to arbitrary dirs; the warning about that is noise.
            ( cd "$QLITE_PKG_CACHE/debs" && apt-get download -q "$pkg=$ver" 2>&1 ) ||
            ( apt-get update -qq && cd "$QLITE_PKG_CACHE/debs" && apt-get download -q "$pkg=$ver" 2>&1 ) ||
                die "apt-get download $pkg=$ver failed"
            deb=$(find "$QLITE_PKG_CACHE/debs" -name "${pkg}_*${ver#*:}_*.deb" -print -quit)
            [[ -n $deb ]] || die "downloaded .deb for $pkg not found"
        fi
        rm -rf "$dir.tmp"
        dpkg-deb -x "$deb" "$dir.tmp"
        rm -rf "$dir" && mv "$dir.tmp" "$dir" && touch "$dir/.done"
    fi >&2
    echo "$dir"
}

# fetch_kernel VER -> directory with boot/ and lib/modules/VER (with modules.dep;
# the .deb leaves depmod to its postinst, so run it on the extracted tree).
fetch_kernel() {
    local ver=$1 dir
    dir=$(fetch_pkg "linux-image-$ver")
    if [[ ! -s $dir/lib/modules/$ver/modules.dep ]]; then
        depmod -b "$dir" "$ver" >&2 || die "depmod on $dir failed"
    fi
    echo "$dir"
}

# fetch_sysmap VER -> path of the real System.map. The image package ships a
# stub; the real one is in the -dbg package (~280 MB). Only that member is
# extracted (it sits near the archive start) and the .deb is then dropped.
fetch_sysmap() {
    local ver=$1 map deb
    map=$QLITE_PKG_CACHE/System.map-$ver
    if [[ ! -s $map ]]; then
        mkdir -p "$QLITE_PKG_CACHE/debs"
        log "downloading linux-image-$ver-dbg for System.map (large, once)"
        ( cd "$QLITE_PKG_CACHE/debs" && apt-get download -q "linux-image-$ver-dbg" 2>&1 ) >&2 ||
            die "apt-get download linux-image-$ver-dbg failed"
        deb=$(find "$QLITE_PKG_CACHE/debs" -name "linux-image-${ver}-dbg_*.deb" -print -quit)
        { dpkg-deb --fsys-tarfile "$deb" 2>/dev/null || true; } |
            tar -xO --occurrence=1 "./usr/lib/debug/boot/System.map-$ver" >"$map.tmp"
        [[ -s $map.tmp ]] || die "no System.map-$ver in $deb"
        mv "$map.tmp" "$map"
        rm -f "$deb"
    fi
    echo "$map"
}

fetch_busybox() {
    local dir
    dir=$(fetch_pkg busybox-static)
    [[ -x $dir/bin/busybox ]] || die "no bin/busybox in $dir"
    echo "$dir/bin/busybox"
}

# mod_closure MODDIR NAME... -> module paths (relative to MODDIR), dependencies
# first, each once. Names may use - or _; unknown names are skipped with a note
# (the list is a wish list across kernel versions).
mod_closure() {
    local moddir=$1; shift
    awk -v want="$*" '
        function norm(s) { gsub(/-/, "_", s); return s }
        function base(p) { sub(/.*\//, "", p); sub(/\.ko(\.(xz|zst|gz))?$/, "", p); return norm(p) }
        function visit(p,   n, i, d) {
            if (p in seen) return
            seen[p] = 1
            n = split(deps[p], d, " ")
            for (i = n; i >= 1; i--) visit(d[i])   # modprobe loads the list tail first
            print p
        }
        { sub(/:$/, "", $1); p = $1; $1 = ""; deps[p] = $0; byname[base(p)] = p }
        END {
            n = split(want, w, " ")
            for (i = 1; i <= n; i++) {
                k = norm(w[i])
                if (k in byname) visit(byname[k])
                else print "mod_closure: no module " w[i] > "/dev/stderr"
            }
        }' "$moddir/modules.dep"
}

# install_modules SRCMODDIR DESTROOT VER NAME... : copy the closure into
# DESTROOT/lib/modules/VER, write its load order to DESTROOT/etc/modules.load
# and a modules.dep so busybox modprobe works too.
install_modules() {
    local src=$1 dest=$2 ver=$3; shift 3
    local m out=$dest/lib/modules/$ver
    mkdir -p "$out" "$dest/etc"
    : >"$dest/etc/modules.load"
    while read -r m; do
        mkdir -p "$out/$(dirname "$m")"
        cp "$src/$m" "$out/$m"
        echo "/lib/modules/$ver/$m" >>"$dest/etc/modules.load"
    done < <(mod_closure "$src" "$@")
    cp "$src/modules.order" "$src/modules.builtin" "$src/modules.builtin.modinfo" "$out/" 2>/dev/null || true
    depmod -b "$dest" "$ver" 2>/dev/null || true
}

# install_busybox BUSYBOX DESTROOT: static busybox plus one symlink per applet.
install_busybox() {
    local bb=$1 dest=$2 a
    mkdir -p "$dest/bin" "$dest/sbin" "$dest/usr/bin" "$dest/usr/sbin"
    cp "$bb" "$dest/bin/busybox"
    for a in $("$bb" --list-full); do
        [[ -e $dest/$a || -L $dest/$a ]] || ln -s /bin/busybox "$dest/$a"
    done
}

# install_elf BINARY DESTROOT [DEST_PATH]: copy a dynamic binary with the
# shared libraries ldd lists and the dynamic loader, at their host paths.
install_elf() {
    local bin=$1 dest=$2 to=${3:-$1} lib
    mkdir -p "$dest/$(dirname "$to")"
    cp -L "$bin" "$dest/$to"
    while read -r lib; do
        [[ -e $dest/$lib ]] && continue
        mkdir -p "$dest/$(dirname "$lib")"
        cp -L "$lib" "$dest/$lib"
    done < <(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
}

# newc_devnodes: a tiny cpio with /dev, /dev/console and /dev/null, written by
# hand so that building needs no root (mknod). The kernel opens /dev/console for
# init's stdio before init could mount devtmpfs. Concatenate in front of the rest.
newc_devnodes() {
    local ino=1
    _newc() { # name mode(hex) rdevmajor rdevminor
        local name=$1 pad
        printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
            "$ino" "$2" 0 0 1 0 0 0 0 "$3" "$4" $((${#name} + 1)) 0
        printf '%s\0' "$name"
        pad=$(( (4 - (110 + ${#name} + 1) % 4) % 4 ))
        head -c "$pad" /dev/zero
        ino=$((ino + 1))
    }
    _newc dev 0x41ED 0 0
    _newc dev/console 0x2180 5 1
    _newc dev/null 0x21B6 1 3
    _newc 'TRAILER!!!' 0 0 0
}

# make_cpio DIR OUT [gzip|none]: newc archive of DIR with dev nodes in front.
make_cpio() {
    local dir=$1 out=$2 comp=${3:-none}
    {
        newc_devnodes
        (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0)
    } | if [[ $comp == gzip ]]; then gzip -6 -n; else cat; fi >"$out.tmp"
    mv "$out.tmp" "$out"
}
