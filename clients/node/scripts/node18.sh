#!/bin/sh
# Build and test the client on Debian bookworm's Node.js 18 (what `.ci/run` installs where `node` is
# missing) without installing it: its packages are downloaded with `apt-get download` into $NODE18_DIR
# (default /tmp/node18), unpacked there with `dpkg -x`, and its `node` is run by path, with its libraries
# through LD_LIBRARY_PATH. Debian's Node 18 loads some of its built-in modules from /usr/share/nodejs,
# so it runs in a mount namespace of its own where the unpacked /usr/share/nodejs is bind-mounted over
# the system's: the machine's own Node.js and /usr/share/nodejs stay untouched. Needs root (unshare -m,
# mount) and Debian's package lists (`apt-get update`). Usage, from clients/node after `npm ci`:
#     sh scripts/node18.sh          # tsc, npm test and npm run test:e2e, all with Node 18
set -eu
dir=${NODE18_DIR:-/tmp/node18}
here=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -x "$dir/root/usr/bin/node" ]; then
    mkdir -p "$dir/debs"
    version=$(apt-cache policy libnode108 | awk '/Candidate:/ {print $2}')
    [ -n "$version" ] && [ "$version" != "(none)" ] || { echo "no libnode108 in the package lists: apt-get update" >&2; exit 1; }
    (cd "$dir/debs" && apt-get download "nodejs=$version" "libnode108=$version" libc-ares2 libuv1 libicu72 \
        libnghttp2-14 libbrotli1 node-undici node-acorn node-cjs-module-lexer)
    for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/root"; done
fi

cat > "$dir/node" <<WRAPPER
#!/bin/sh
if [ -z "\${NODE18_NS:-}" ]; then exec unshare -m env NODE18_NS=1 "\$0" "\$@"; fi
mount --bind "$dir/root/usr/share/nodejs" /usr/share/nodejs
export LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu"
exec "$dir/root/usr/bin/node" "\$@"
WRAPPER
chmod +x "$dir/node"

cd "$here"
echo "node $("$dir/node" --version)"
"$dir/node" node_modules/typescript/bin/tsc -p tsconfig.json
"$dir/node" dist/test/all.js
"$dir/node" dist/e2e/worker.test.js
