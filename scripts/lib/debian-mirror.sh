# The Debian mirror this machine's apt already uses, for scripts that build
# a Debian rootfs (debootstrap) or fetch Debian packages: the project's
# files name no mirror host. Reads /etc/apt/sources.list and
# /etc/apt/sources.list.d/*.list|*.sources (one-line and deb822 formats) and
# prints the first URI that serves the suite asked for (default bookworm).
# WARDGATE_DEBIAN_MIRROR overrides it (a machine whose apt is not Debian's).
#   mirror=$(debian_mirror bookworm) || exit 1
debian_mirror() {
  local suite=${1:-bookworm}
  if [ -n "${WARDGATE_DEBIAN_MIRROR:-}" ]; then
    echo "$WARDGATE_DEBIAN_MIRROR"
    return 0
  fi
  python3 - "$suite" <<'PY'
import glob, sys

suite = sys.argv[1]
found = []

def one_line(path):
    for line in open(path, encoding="utf-8", errors="replace"):
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        words = words[1:]
        if words[0].startswith("["):
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 2 and words[1] == suite:
            found.append(words[0])

def deb822(path):
    stanza = {}
    lines = open(path, encoding="utf-8", errors="replace").read().split("\n") + [""]
    for line in lines:
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza.get("enabled", "yes").lower() != "no" and "deb" in stanza.get("types", "").split() \
                    and suite in stanza.get("suites", "").split():
                found.extend(stanza.get("uris", "").split())
            stanza = {}
        elif ":" in line and not line[0].isspace():
            k, v = line.split(":", 1)
            stanza[k.strip().lower()] = v.strip()

for p in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        one_line(p)
    except OSError:
        pass
for p in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    try:
        deb822(p)
    except OSError:
        pass
uris = [u for u in found if u.startswith(("http://", "https://", "file:/"))]
if not uris:
    sys.exit(1)
print(uris[0].rstrip("/"))
PY
  [ $? -eq 0 ] && return 0
  echo "no Debian mirror for '$suite' in this machine's apt sources; set WARDGATE_DEBIAN_MIRROR" >&2
  return 1
}
