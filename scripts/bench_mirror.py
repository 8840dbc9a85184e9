#!/usr/bin/env python3
"""Lay out a one-image mirror shaped like cloud-images.ubuntu.com for the benchmark.

usage: bench_mirror.py MIRROR_DIR IMAGE_FILE SERIAL

The image is hard-linked into server/releases/noble/release-SERIAL/ (the canonical path that
simplestreams item paths use), releases/24.04 and releases/noble point at it, and every folder
gets an Apache-style index.html. SHA256SUMS is written here; the caller signs it.
"""
import hashlib
import json
import os
import sys
import time

VERSION, CODENAME, TITLE = "24.04", "noble", "Noble Numbat"


def listing(title, parent, rows):
    """An Apache mod_autoindex FancyIndexing page, like the real site's."""
    out = [f"<html><head><title>Index of {title}</title></head><body><h1>Index of {title}</h1>",
           '<pre><img src="/icons/blank.gif" alt="Icon " width="22" height="22"> '
           '<a href="?C=N;O=D">Name</a>                    <a href="?C=M;O=A">Last modified</a>'
           '      <a href="?C=S;O=A">Size</a>  <a href="?C=D;O=A">Description</a><hr>'
           f'<img src="/icons/back.gif" alt="[PARENTDIR]" width="22" height="22"> '
           f'<a href="{parent}">Parent Directory</a>                             -']
    for name, size, desc in rows:
        icon = "folder.gif" if name.endswith("/") else "unknown.gif"
        out.append(f'<img src="/icons/{icon}" alt="[   ]" width="22" height="22"> '
                   f'<a href="{name}">{name}</a>{" " * max(1, 40 - len(name))}'
                   f'2099-01-01 00:00  {size:>4}  {desc}')
    out.append("<hr></pre></body></html>\n")
    return "\n".join(out)


def human(n):
    for unit in ("", "K", "M", "G"):
        if n < 1024:
            return f"{n}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    mirror, image, serial = sys.argv[1], sys.argv[2], sys.argv[3]
    name = f"ubuntu-{VERSION}-server-cloudimg-amd64.img"
    rel = f"server/releases/{CODENAME}/release-{serial}"
    folder = os.path.join(mirror, rel)
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, name)
    if not os.path.exists(target):
        os.link(image, target)
    digest = sha256(target)
    size = os.path.getsize(target)
    with open(os.path.join(folder, "SHA256SUMS"), "w") as f:
        f.write(f"{digest} *{name}\n")
    os.makedirs(os.path.join(mirror, "releases"), exist_ok=True)
    for link, dest in ((f"releases/{VERSION}", f"../server/releases/{CODENAME}"),
                       (f"releases/{CODENAME}", f"../server/releases/{CODENAME}"),
                       ("releases/server", "../server"),
                       (f"server/releases/{CODENAME}/release", f"release-{serial}")):
        path = os.path.join(mirror, link)
        if not os.path.islink(path):
            os.symlink(dest, path)
    desc = f"Ubuntu Server {VERSION} LTS ({TITLE}) released builds"
    pages = {
        "": listing("/", "/", [("releases/", "-", "")]),
        "releases": listing("/releases", "/", [(f"{VERSION}/", "-", desc), (f"{CODENAME}/", "-", desc),
                                               ("streams/", "-", "")]),
        f"server/releases/{CODENAME}": listing(f"/releases/{VERSION}", "/releases/",
                                              [(f"release-{serial}/", "-", ""), ("release/", "-", "")]),
        rel: listing(f"/releases/{VERSION}/release-{serial}", f"/releases/{VERSION}/",
                     [("SHA256SUMS", "1", ""), ("SHA256SUMS.gpg", "1", ""), (name, human(size), "")]),
    }
    for path, html in pages.items():
        with open(os.path.join(mirror, path, "index.html"), "w") as f:
            f.write(html)
    streams = os.path.join(mirror, "releases", "streams", "v1")
    os.makedirs(streams, exist_ok=True)
    products_path = "streams/v1/com.ubuntu.cloud:released:download.json"
    updated = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    index = {"format": "index:1.0", "updated": updated, "index": {
        "com.ubuntu.cloud:released:download": {
            "datatype": "image-downloads", "format": "products:1.0", "updated": updated,
            "path": products_path, "products": [f"com.ubuntu.cloud:server:{VERSION}:amd64"]}}}
    products = {"content_id": "com.ubuntu.cloud:released:download", "datatype": "image-downloads",
                "format": "products:1.0", "updated": updated, "products": {
                    f"com.ubuntu.cloud:server:{VERSION}:amd64": {
                        "aliases": f"{VERSION},n,{CODENAME},lts,default", "arch": "amd64",
                        "os": "ubuntu", "release": CODENAME, "release_codename": TITLE,
                        "release_title": f"{VERSION} LTS", "support_eol": "2029-05-31",
                        "supported": True, "version": VERSION,
                        "versions": {serial: {"items": {"disk1.img": {
                            "ftype": "disk1.img", "path": f"{rel}/{name}",
                            "sha256": digest, "size": size}}}}}}}
    with open(os.path.join(streams, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    with open(os.path.join(mirror, "releases", products_path), "w") as f:
        json.dump(products, f, indent=1)
    print(f"{rel}/{name}")


if __name__ == "__main__":
    main()
