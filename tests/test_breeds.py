from __future__ import annotations

from dogbreed.breeds import DOG_INDICES, WOLF_FOX_INDICES, clean_name, imagenet_breed_indices, lookup, stanford_breeds


def test_table_has_120_unique_breeds_with_imagenet_indices() -> None:
    breeds = stanford_breeds()
    assert len(breeds) == 120
    assert len({b.wnid for b in breeds}) == 120
    assert len({b.name for b in breeds}) == 120
    idx = imagenet_breed_indices()
    assert sorted(idx) == sorted(set(range(151, 269)) - {251} | {273, 274, 275})
    assert 251 in DOG_INDICES and not set(WOLF_FOX_INDICES) & set(DOG_INDICES)


def test_names_round_trip_to_the_right_breed() -> None:
    for b in stanford_breeds():
        assert lookup(b.wnid) == b
        assert lookup(b.folder) == b
        assert lookup(b.name) == b
        assert lookup(b.name.upper().replace(" ", "_")) == b
    assert lookup("n02099601").name == "Golden retriever"
    assert lookup("German shepherd").wnid == "n02106662"
    assert lookup("shih tzu").name == "Shih-Tzu"
    assert lookup("not a breed") is None


def test_clean_name() -> None:
    assert clean_name("n02085620-Chihuahua") == "Chihuahua"
    assert clean_name("golden_retriever") == "Golden retriever"
    assert clean_name("n02106662-German_shepherd") == "German shepherd"
    assert clean_name("boston_bull") == "Boston bull"


def test_names_in_any_script_have_their_own_keys_and_a_latin_part_still_names_a_breed() -> None:
    """Keys kept only a-z: '柴犬' had none. Marks of other scripts tell words apart (パグ, a pug, is not バク), only
    a Latin letter's accent is ignored; a name with a Latin part ("Chihuahua (吉娃娃)") still finds that breed."""
    from dogbreed.breeds import BreedIndex, lookup, normalize_key, stanford_breeds

    assert normalize_key("柴犬") == "柴犬" and normalize_key("パグ") != normalize_key("バク")
    assert normalize_key("कुत्ता") != normalize_key("कत्त")
    assert normalize_key("Löwchen") == normalize_key("lowchen") and normalize_key("Shih-Tzu") == "shihtzu"
    assert lookup("Chihuahua (吉娃娃)").name == "Chihuahua" and lookup("Chihuahua™").name == "Chihuahua"
    index = BreedIndex(list(stanford_breeds()))
    assert index.find("柴犬") is None and index.find("Beagle (ビーグル)") == index.find("beagle")
