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


def test_everyday_names_find_their_breed_and_shared_names_say_which_breeds_they_could_be() -> None:
    """'Labrador', 'yorkie', 'St. Bernard' named no breed: the service refused them as corrections and a folder so
    named became a breed of its own. A name several breeds share ('poodle') names none of them, and says which."""
    from dogbreed.breeds import BreedIndex, aliases, normalize_key

    for name, wnid in (("Labrador", "n02099712"), ("yorkie", "n02094433"), ("St. Bernard", "n02109525"),
                       ("st bernard", "n02109525"), ("Alsatian", "n02106662"), ("Pembroke Welsh corgi", "n02113023"),
                       ("Boston terrier", "n02096585"), ("Xoloitzcuintli", "n02113978")):
        assert (b := lookup(name)) is not None and b.wnid == wnid, name
    assert lookup("poodle") is None and lookup("corgi") is None
    own = {normalize_key(b.name) for b in stanford_breeds()}
    assert aliases() and not own & set(aliases()), "an alias that is a breed's own name never applies"
    classes = list(stanford_breeds())
    names, index = [b.name for b in classes], BreedIndex(classes)
    assert names[index.find("Labrador")] == "Labrador retriever"
    assert index.find("poodle") is None
    assert index.unknown("poodle") == ("'poodle' is more than one breed: Toy poodle, Miniature poodle or "
                                              "Standard poodle")
    assert index.unknown("golden retreiver") == ("unknown breed 'golden retreiver' (did you mean Golden "
                                                        "retriever?)")
    assert index.unknown("labradour").endswith("(did you mean Labrador (Labrador retriever)?)")
    assert index.unknown("Wolfdog 9000") == "unknown breed 'Wolfdog 9000'"
    # an everyday name is suggested only when very close: "Dalmatian" was offered "German shepherd" (via Alsatian)
    assert index.unknown("Dalmatian") == "unknown breed 'Dalmatian'"
    # plurals, and a name two breeds share as WordNet has it ("Eskimo dog, husky")
    assert names[index.find("pugs")] == "Pug" and lookup("Lhasas").name == "Lhasa"
    assert index.unknown("Poodles").startswith("'Poodles' is more than one breed: Toy poodle")
    assert index.unknown("husky") == "'husky' is more than one breed: Siberian husky or Eskimo dog"
    # a model's own class keeps its name: an added breed called "Lab" is not the Labrador
    mine = BreedIndex([*classes, {"wnid": None, "name": "Lab"}])
    assert mine.find("lab") == len(classes) and mine.find("Labrador") == index.find("Labrador")


def test_a_folder_with_an_everyday_name_joins_its_breed(tmp_path) -> None:  # noqa: ANN001
    from fixtures import write_jpeg

    from dogbreed.data import load_dataset

    for folder, n in (("Yorkie", 2), ("yorkshire_terrier", 2), ("Poodle", 2)):
        for i in range(n):
            write_jpeg(tmp_path / folder / f"{i}.jpg", seed=i)
    samples = load_dataset(tmp_path).samples
    assert sorted({(s.breed, s.wnid) for s in samples}) == [("Poodle", None), ("Yorkshire terrier", "n02094433")]
    # each keeps the name its folder gave it, which a model's own class of that name matches first (adapt, card)
    assert sorted({(s.label, s.breed) for s in samples}) == [("Poodle", "Poodle"), ("Yorkie", "Yorkshire terrier"),
                                                             ("yorkshire_terrier", "Yorkshire terrier")]


def test_a_shared_name_names_no_breed_also_in_a_model_holding_one_of_them() -> None:
    """"corgi" was the Pembroke of a model without the Cardigan, so a Corgi/ folder was merged into it."""
    from dogbreed.breeds import BreedIndex

    pembroke = lookup("Pembroke")
    index = BreedIndex([pembroke, lookup("pug")])
    assert index.find("corgi") is None and index.find("Pembroke Welsh corgi") == 0 and index.find("pugs") == 1


def test_adapt_keeps_a_folder_s_photos_in_the_model_s_own_breed_of_that_name(tmp_path) -> None:  # noqa: ANN001
    """A model grown before everyday names were known may have its own "Yorkie" breed: a "Yorkie" folder adapts
    that breed, not the Yorkshire terrier the name now also means (as the service files feedback under it)."""
    from fixtures import write_jpeg

    from dogbreed.adapt import load_labelled
    from dogbreed.breeds import BreedIndex

    for i in range(2):
        write_jpeg(tmp_path / "Yorkie" / f"{i}.jpg", seed=i)
    items = load_labelled(tmp_path)
    assert {it.breed.wnid for it in items} == {"n02094433"} and {it.label for it in items} == {"Yorkie"}
    own = BreedIndex([*stanford_breeds(), {"wnid": None, "name": "Yorkie"}])
    assert own.find("Yorkie", everyday=False) == 120 and own.find("Yorkie") == 120
    plain = BreedIndex(list(stanford_breeds()))
    assert plain.find("Yorkie", everyday=False) is None and plain.find("Yorkie") == plain.find("Yorkshire terrier")
