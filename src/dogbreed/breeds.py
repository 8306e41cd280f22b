"""The breed table: the 120 Stanford Dogs breeds, their WordNet ids and ImageNet-1k indices, and name rules."""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

# ImageNet-1k index ranges with a meaning for "is there a dog?". Dalmatian (251) is a dog but not a Stanford
# breed; wolves/coyote (269-272) and foxes (277-280) are canids that are *not* dogs.
DALMATIAN_INDEX = 251
DOG_INDICES: tuple[int, ...] = tuple(list(range(151, 269)) + [273, 274, 275])  # incl. dalmatian
WOLF_FOX_INDICES: tuple[int, ...] = (269, 270, 271, 272, 277, 278, 279, 280)
DOMESTIC_CAT_INDICES: tuple[int, ...] = (281, 282, 283, 284, 285)
BIG_CAT_INDICES: tuple[int, ...] = tuple(range(286, 294))


@dataclass(frozen=True)
class Breed:
    wnid: str | None
    name: str
    imagenet_index: int | None = None
    folder: str | None = None


def clean_name(raw: str) -> str:
    """'n02099601-golden_retriever' or 'golden_retriever' -> 'Golden retriever'.

    Only the first letter is capitalised so proper nouns in the data ('German_shepherd') keep theirs.
    """
    part = raw.strip()
    m = re.match(r"^n\d{8}[-_](.+)$", part)
    if m:
        part = m.group(1)
    part = re.sub(r"[_\s]+", " ", part).strip()
    part = part.replace(" - ", "-")
    return part[:1].upper() + part[1:] if part else part


def normalize_key(name: str) -> str:
    """A lookup key that ignores case, separators, punctuation and the accents of Latin letters ('Shih-Tzu' ==
    'shih tzu', 'Löwchen' == 'Lowchen'), and keeps letters of any script with their marks (パグ is not バク): with
    only a-z kept, '柴犬' had no key, so `adapt` made every photo of a folder so named a breed of its own, and
    `add-breed` called the name empty. `ascii_key` is the key it had."""
    out: list[str] = []
    for c in unicodedata.normalize("NFD", clean_name(name).casefold()):
        if unicodedata.combining(c) and out and out[-1].isascii():
            continue  # an accent on a Latin letter
        if unicodedata.category(c)[0] in "LMN":  # letters, their marks, digits: not punctuation, spaces, symbols
            out.append(c)
    return unicodedata.normalize("NFC", "".join(out))


def ascii_key(name: str) -> str:
    """The key of the name's ASCII letters and digits only: "Chihuahua (吉娃娃)" still names the Chihuahua."""
    return re.sub(r"[^a-z0-9]", "", normalize_key(name))


@lru_cache(maxsize=1)
def stanford_breeds() -> tuple[Breed, ...]:
    """The 120 Stanford Dogs breeds in ImageNet index order."""
    text = resources.files("dogbreed").joinpath("data/stanford_dogs_120.tsv").read_text()
    out = []
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        folder, wnid, idx = line.split("\t")
        out.append(Breed(wnid=wnid, name=clean_name(folder), imagenet_index=int(idx), folder=folder))
    return tuple(sorted(out, key=lambda b: b.imagenet_index or 0))


@lru_cache(maxsize=1)
def _by_key() -> dict[str, Breed]:
    table: dict[str, Breed] = {}
    for b in stanford_breeds():
        table[b.wnid or ""] = b
        table[normalize_key(b.name)] = b
    return table


def lookup(name_or_wnid: str) -> Breed | None:
    """Find a Stanford breed by wnid, folder name, any spelling of its name, its plural ('pugs'), or an everyday
    name of it (`aliases`: 'Labrador', 'yorkie', 'St. Bernard')."""
    s = name_or_wnid.strip()
    m = re.match(r"^(n\d{8})", s)
    table = _by_key()
    for key in (m.group(1) if m else "", *_keys(s)):
        if key and key in table:
            return table[key]
    meant = everyday_name(s)
    return table[meant[0]] if len(meant) == 1 else None


def _keys(text: str) -> list[str]:
    """The keys a typed name is tried under: its own (`normalize_key`), its Latin part's (`ascii_key`), and each
    without a plural s ('Poodles', 'pugs')."""
    keys = [normalize_key(text), ascii_key(text)]
    return keys + [k[:-1] for k in keys if len(k) > 3 and k.endswith("s")]


def everyday_name(text: str) -> tuple[str, ...]:
    """The wnids an everyday name (`aliases`) names, tried under each of `_keys`; () for any other text."""
    table = aliases()
    return next((table[k][1] for k in _keys(text) if k in table), ())


@lru_cache(maxsize=1)
def aliases() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Everyday names that no spelling of a Stanford name matches, by key (`normalize_key`) -> the name as written
    and the wnids it names (data/breed_aliases.tsv): one for 'Labrador', 'Alsatian' or 'St. Bernard'; several for
    a name shared by breeds ('poodle', 'corgi', 'husky'), which matches none of them but is named in
    `BreedIndex.unknown`'s message. Without them a user's correction "Labrador" was refused by the service and a
    folder named "Yorkie" became a breed of its own."""
    text = resources.files("dogbreed").joinpath("data/breed_aliases.tsv").read_text(encoding="utf-8")
    table = _by_key()
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text.splitlines()[1:]:
        if line.strip():
            alias, names = line.split("\t")
            out[normalize_key(alias)] = (alias, tuple(str(table[normalize_key(n)].wnid) for n in names.split(",")))
    return out


def imagenet_breed_indices() -> list[int]:
    return [b.imagenet_index for b in stanford_breeds() if b.imagenet_index is not None]


class BreedIndex:
    """The one way to match a breed given as text to a model's classes: by wnid, folder name or any spelling of
    its name (`normalize_key`); the first class wins when two share a key."""

    def __init__(self, classes: Sequence[Breed | dict[str, Any]]):
        self._by: dict[str, int] = {}
        self._names: list[str] = []  # in index order, for `unknown`'s suggestions
        for b in classes:
            self.add(b)

    def add(self, b: Breed | dict[str, Any]) -> int:
        """Index a class (a `Breed`, or a dict with wnid/name as galleries store them); returns its index."""
        i = len(self)
        wnid, name, folder = ((b.get("wnid"), str(b.get("name")), b.get("folder")) if isinstance(b, dict)
                              else (b.wnid, b.name, b.folder))
        for key in (wnid, folder, normalize_key(name), ascii_key(name)):
            if key:
                self._by.setdefault(key, i)
        self._names.append(name)
        return i

    def __len__(self) -> int:
        return len(self._names)

    def find(self, text: str | None = None, wnid: str | None = None, everyday: bool = True) -> int | None:
        """The class named by ``wnid`` when it is one of them, else by ``text`` (a wnid, a folder or a name, or
        its plural), else by the everyday name ``text`` is (`aliases`; ``everyday`` False: the classes' own names
        only). A class's own name comes first: a breed added as "Lab" is "lab", not the Labrador."""
        if wnid and wnid in self._by:
            return self._by[wnid]
        s = (text or "").strip()
        if not s:
            return None
        for key in (s, *_keys(s)):
            if key and key in self._by:
                return self._by[key]
        wnids = everyday_name(s) if everyday else ()
        # a name several breeds share names none of them, also in a model holding only one ("corgi" is not the
        # Pembroke of a model without the Cardigan)
        return self._by.get(wnids[0]) if len(wnids) == 1 else None

    def find_labelled(self, label: str | None, text: str, wnid: str | None = None) -> int | None:
        """The class of a dataset's photo: the model's own class named as the dataset names it (``label``, its
        folder: a "Yorkie" class grown before everyday names were known keeps a Yorkie/ folder, which ingest now
        calls the Yorkshire terrier), else its breed's (`find`)."""
        i = self.find(label, everyday=False) if label else None
        return i if i is not None else self.find(text, wnid)

    def meant(self, text: str) -> list[int]:
        """The classes an everyday name (`aliases`) names, among this index's: one for 'Labrador', the three
        poodles for 'poodle'; none for any other text."""
        return [self._by[w] for w in everyday_name(text) if w in self._by]

    def unknown(self, text: str) -> str:
        """Why ``text`` names no class, with what it may mean: the breeds a shared name stands for ('poodle'), or
        the names closest to a misspelling ('golden retreiver'), everyday names among them only when very close,
        and shown with their breed ('Labrador (Labrador retriever)' for 'labradour')."""
        names = self._names
        meant = [names[i] for i in self.meant(text)]
        if len(meant) > 1:
            return f"{text!r} is more than one breed: {listed(meant)}"
        key = normalize_key(text)
        own = {normalize_key(n): n for n in names}
        close = [own[k] for k in difflib.get_close_matches(key, list(own), n=3, cutoff=0.75)]
        everyday = {k: f"{alias} ({names[i[0]]})" for k, (alias, wnids) in aliases().items()
                    if len(wnids) == 1 and (i := self.meant(alias))}
        close += [everyday[k] for k in difflib.get_close_matches(key, list(everyday), n=3, cutoff=0.85)]
        return f"unknown breed {text!r}" + (f" (did you mean {listed(close[:3])}?)" if close else "")


def listed(names: Sequence[str], last: str = "or") -> str:
    """'A', 'A or B', 'A, B or C' (``last`` the word before the last name)."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" {last} " + names[-1]
