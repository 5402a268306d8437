#!/usr/bin/env python3
"""Generate a chom tree of N valid Server files, a few Roles and their scripts.

Usage: gen_inventory.py N OUT_DIR [--addresses-from IP] [--port P] [--user U]

Servers are spread over sub-folders of 500 files, as a large fleet would be, and each
names a role and two components. Deterministic: the same N gives the same files.
"""
import argparse
import ipaddress
import os

ROLES = {
    "web": (1, 1024, 10),
    "db": (2, 4096, 40),
    "cache": (1, 2048, 10),
    "observability": (1, 2048, 20),
}
COMPONENTS = ["motd", "bench-file"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("count", type=int)
    ap.add_argument("out")
    ap.add_argument("--addresses-from", default="10.0.0.1")
    ap.add_argument("--port", type=int, default=22)
    ap.add_argument("--user", default="root")
    ap.add_argument("--identity-file", default=None)
    ap.add_argument("--components", default=",".join(COMPONENTS))
    args = ap.parse_args()
    components = [c for c in args.components.split(",") if c]

    inv = os.path.join(args.out, "inventory.d")
    os.makedirs(os.path.join(inv, "roles"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "scripts"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "secrets.d"), exist_ok=True)
    for name, (cpu, mem, disk) in ROLES.items():
        with open(os.path.join(inv, "roles", f"{name}.yaml"), "w") as f:
            f.write(
                "apiVersion: chom.dev/v1\nkind: Role\nmetadata:\n"
                f"  name: {name}\nspec:\n"
                f"  requirements: {{minCpu: {cpu}, minMemoryMb: {mem}, minDiskGb: {disk}}}\n"
                f"  config:\n    role: {name}\n"
            )
    for c in components:
        path = os.path.join(args.out, "scripts", f"{c}.sh")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write("#!/bin/sh\nset -eu\necho \"::chom:: resource file /tmp/chom-bench-$CHOM_COMPONENT\"\n")

    base = ipaddress.ip_address(args.addresses_from)
    roles = list(ROLES)
    for i in range(args.count):
        name = f"srv-{i:05d}"
        folder = os.path.join(inv, f"group-{i // 500:03d}")
        os.makedirs(folder, exist_ok=True)
        role = roles[i % len(roles)]
        identity = f"\n    identityFile: {args.identity_file}" if args.identity_file else ""
        comps = "".join(
            f"    - name: {c}\n      version: \"1.{i % 7}\"\n      config: {{content: \"hello {name}\"}}\n"
            for c in components
        )
        with open(os.path.join(folder, f"{name}.yaml"), "w") as f:
            f.write(
                "# yaml-language-server: $schema=../../schemas/server.schema.json\n"
                "apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n"
                f"  name: {name}\n  labels: {{env: prod, shard: \"{i % 16}\"}}\n"
                "spec:\n"
                f"  address: {base + i}\n"
                f"  ssh:\n    user: {args.user}\n    port: {args.port}{identity}\n"
                f"  role: {role}\n"
                f"  expectedSpecs: {{cpu: 2, memoryMb: 4096, diskGb: 40}}\n"
                f"  components:\n{comps}"
                f"  config:\n    domain: {name}.example.com\n    max_connections: {100 + i % 50}\n"
                "  interval: 10m\n"
            )


if __name__ == "__main__":
    main()
