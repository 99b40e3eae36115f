#!/usr/bin/env bash
# Renders recsys-grpc.conf.template to stdout, like envsubst with its three variables, except
# that RECSYS_UPSTREAM may hold several replica addresses (separated by spaces or commas): the
# template's `server ${RECSYS_UPSTREAM} ...` line is repeated once per address.
#   RECSYS_LISTEN=127.0.0.1:50050 RECSYS_MAX_INFLIGHT=32 \
#   RECSYS_UPSTREAM="127.0.0.1:50051 127.0.0.1:50052" deploy/nginx/render.sh > recsys-grpc.conf
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${RECSYS_LISTEN:?set RECSYS_LISTEN (host:port nginx listens on)}"
: "${RECSYS_UPSTREAM:?set RECSYS_UPSTREAM (one or more host:port replica addresses)}"
: "${RECSYS_MAX_INFLIGHT:?set RECSYS_MAX_INFLIGHT (Recommender calls in flight at most)}"
upstreams="${RECSYS_UPSTREAM//,/ }"
[[ -n ${upstreams// /} ]] || { echo "render.sh: RECSYS_UPSTREAM holds no address" >&2; exit 2; }
awk -v listen="$RECSYS_LISTEN" -v ups="$upstreams" -v inflight="$RECSYS_MAX_INFLIGHT" '
    function subst(line, name, value) {
        gsub("\\$\\{" name "\\}", value, line)
        return line
    }
    {
        line = subst(subst($0, "RECSYS_LISTEN", listen), "RECSYS_MAX_INFLIGHT", inflight)
        # Only the upstream line is repeated.
        if (line ~ /^[ \t]*server \$\{RECSYS_UPSTREAM\}/) {
            n = split(ups, addr, " ")
            for (i = 1; i <= n; i++)
                if (addr[i] != "") print subst(line, "RECSYS_UPSTREAM", addr[i])
        } else {
            print subst(line, "RECSYS_UPSTREAM", ups)  # as envsubst would (comments)
        }
    }
' "$HERE/recsys-grpc.conf.template"
