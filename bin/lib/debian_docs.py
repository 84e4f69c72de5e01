#!/usr/bin/env python3
"""The documents bin/package puts into /usr/share/doc/<package>, generated from the repository so
that they cannot drift from it:

  changelog PACKAGE MAINTAINER DATE   CHANGELOG.md as a Debian changelog (newest first). DATE
                                      (RFC 2822) dates the Unreleased section; released sections
                                      keep their own dates.
  copyright LICENSE                   the DEP-5 copyright file: courier's license, and the crates
                                      that are linked into courier.so with their licenses
  notices                             the copyright notices and license texts of those crates, as
                                      their packages ship them

The crates are those `cargo tree` lists for courier's normal dependencies with its default
features, proc-macro crates left out (they run in the compiler and leave no code in the library).
"""

import email.utils
import hashlib
import json
import re
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

WIDTH = 78  # lintian's debian-changelog-line-too-long starts at 80


def changelog_sections(text):
    """Yields (version, date or None, [(kind, paragraph)]) for each `## [...]` section."""
    sections = []
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        head, _, body = block.partition("\n")
        unreleased = re.match(r"\[Unreleased\] - (\S+)\s*$", head)
        released = re.match(r"\[(\S+)\] - (\d{4}-\d{2}-\d{2})\s*$", head)
        if unreleased:
            version, date = unreleased.group(1), None
        elif released:
            version, date = released.groups()
        else:
            sys.exit(f"debian_docs: CHANGELOG.md: cannot read the heading '## {head}'")
        items, kind, current = [], None, None
        for line in body.splitlines():
            if line.startswith("### "):
                kind, current = line[4:].strip(), None
            elif line.startswith("- "):
                current = [line[2:].strip()]
                items.append((kind, current))
            elif line.startswith("  ") and current is not None:
                current.append(line.strip())
            elif line.strip():
                if current is None or current is not items[-1][1] or items[-1][0] != "text":
                    current = [line.strip()]
                    items.append(("text", current))
                else:
                    current.append(line.strip())
            else:
                current = None
        sections.append((version, date, [(k, " ".join(words)) for k, words in items]))
    if not sections:
        sys.exit("debian_docs: CHANGELOG.md has no version sections")
    return sections


def changelog(package, maintainer, unreleased_date):
    out = []
    for version, date, items in changelog_sections(Path("CHANGELOG.md").read_text()):
        if date is None:
            distribution, stamp = "UNRELEASED", unreleased_date
        else:
            distribution = "unstable"
            day = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            stamp = email.utils.format_datetime(day)
        out.append(f"{package} ({version}) {distribution}; urgency=medium\n")
        for kind, paragraph in items:
            prefix = "" if kind in (None, "text") else f"{kind}: "
            out.append(textwrap.fill(prefix + paragraph, WIDTH, initial_indent="  * ",
                                     subsequent_indent="    ", break_on_hyphens=False))
        out.append(f"\n -- {maintainer}  {stamp}\n")
    sys.stdout.write("\n".join(out))


def linked_crates():
    """(name, version, license, source directory) of every third-party crate in courier.so."""
    tree = subprocess.run(
        ["cargo", "tree", "--locked", "-p", "courier", "-e", "normal,no-proc-macro",
         "--prefix", "none", "-f", "{p}|{l}"],
        check=True, capture_output=True, text=True).stdout
    metadata = json.loads(subprocess.run(
        ["cargo", "metadata", "--locked", "--format-version", "1"],
        check=True, capture_output=True, text=True).stdout)
    packages = {(p["name"], p["version"]): p for p in metadata["packages"]}
    crates = {}
    for line in tree.splitlines():
        m = re.match(r"^(\S+) v(\S+)( \(.*?\))?\|(.*?)( \(\*\))?$", line)
        if not m:
            sys.exit(f"debian_docs: cannot read cargo tree's line {line!r}")
        name, version, _, license_, _ = m.groups()
        package = packages[(name, version)]
        if package["source"] is None:
            continue  # courier's own crates: the Files: * paragraph
        if not license_:
            sys.exit(f"debian_docs: crate {name} {version} declares no license; check it by hand")
        crates[(name, version)] = (name, version, license_, Path(package["manifest_path"]).parent)
    return sorted(crates.values())


def copyright_(license_path):
    lines = Path(license_path).read_text().strip().splitlines()
    # The license paragraph carries the text after the title and the copyright line.
    holder = next(line for line in lines if line.startswith("Copyright"))
    body = "\n".join(lines[lines.index(holder) + 1:]).strip()
    crates = linked_crates()
    listing = "\n".join(f" {name} {version} ({license_})" for name, version, license_, _ in crates)
    years_holder = holder.removeprefix("Copyright (c) ")
    sys.stdout.write(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: courier\n"
        "Comment: courier.so is built from Rust source and contains, linked statically,\n"
        " the code of these crates. Their copyright notices and license texts, as each\n"
        " crate ships them, are in\n"
        " /usr/share/doc/postgresql-15-courier/third-party-licenses.gz.\n"
        " .\n"
        f"{listing}\n"
        "\n"
        "Files: *\n"
        f"Copyright: {years_holder}\n"
        "License: PostgreSQL\n"
        + "\n".join(" " + line if line.strip() else " ." for line in body.splitlines())
        + "\n"
    )


LICENSE_FILE = re.compile(r"^(LICEN[CS]E|COPYING|COPYRIGHT|UNLICENSE|NOTICE)", re.I)


def notices():
    seen = {}
    out = []
    for name, version, license_, directory in linked_crates():
        files = sorted(p for p in directory.iterdir() if p.is_file() and LICENSE_FILE.match(p.name))
        out.append(f"{'=' * WIDTH}\n{name} {version}\nLicense: {license_}\n")
        if not files:
            # Some crates publish no license file; their manifest's SPDX expression is all there is.
            out.append("The crate ships no license file; its manifest declares the license above.\n")
        for path in files:
            text = path.read_text(errors="replace")
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest in seen:
                out.append(f"--- {path.name}: the same text as {seen[digest]}\n")
            else:
                seen[digest] = f"{name} {version}'s {path.name}"
                out.append(f"--- {path.name}\n\n{text.rstrip()}\n")
        out.append("")
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "changelog" and len(args) == 3:
        changelog(*args)
    elif command == "copyright" and len(args) == 1:
        copyright_(*args)
    elif command == "notices" and not args:
        notices()
    else:
        sys.exit(__doc__)
