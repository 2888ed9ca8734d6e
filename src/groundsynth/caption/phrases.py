"""Word lists of the template captioner: nouns per class, openings, verbs, quantity words.

Every class noun here names its class through the consistency lexicon
(``groundsynth/evaluate/lexicon/landcover_en.yaml``) and every quantity phrase is a key of
its ``quantities`` table, whose ranges decide when the phrase may be used; the tests check
both, so the captioner and the metric agree by construction. Edit freely within those rules.

Noun kinds: ``"mass"`` (farmland: takes "some", "a little", "large areas of"),
``"plural"`` (fields: takes "some", "a few") and ``"single"`` (a lake: takes no quantity).
A quantity phrase with a head noun of its own (:data:`PLURAL_HEADS`,
:data:`SINGULAR_HEADS`) decides the number of the whole phrase instead of the noun.
"""

from __future__ import annotations

__all__ = [
    "ADVERBS",
    "BUILTUP_NOUNS",
    "CLASS_NOUNS",
    "COVER_VERBS",
    "FRACTION_WORDS",
    "FULL_ADJECTIVES",
    "LAND_OPENINGS",
    "ONLY_CLASS",
    "OPENINGS",
    "PLURAL_HEADS",
    "QUANTITY_MASS",
    "QUANTITY_PLURAL",
    "SCATTERABLE",
    "SCENE_NOUNS",
    "SINGULAR_HEADS",
    "WATER_NOUNS",
    "WITH_LINKS",
]

# (noun phrase, kind) per class index, for the classes without shape-specific nouns.
CLASS_NOUNS: dict[int, tuple[tuple[str, str], ...]] = {
    0: (  # Tree
        ("woodland", "mass"),
        ("forest", "mass"),
        ("tree cover", "mass"),
        ("wooded land", "mass"),
        ("trees", "plural"),
    ),
    1: (  # Shrub
        ("shrubland", "mass"),
        ("scrub", "mass"),
        ("scrubland", "mass"),
        ("bushland", "mass"),
        ("shrubs", "plural"),
        ("bushes", "plural"),
    ),
    2: (  # Grass
        ("grassland", "mass"),
        ("pasture", "mass"),
        ("grass", "mass"),
        ("open grassland", "mass"),
        ("meadows", "plural"),
        ("pastures", "plural"),
    ),
    3: (  # Crop
        ("farmland", "mass"),
        ("cropland", "mass"),
        ("agricultural land", "mass"),
        ("arable land", "mass"),
        ("fields", "plural"),
        ("crop fields", "plural"),
        ("cultivated fields", "plural"),
    ),
    4: (  # Built-up (generic; see BUILTUP_NOUNS for pattern-specific ones)
        ("built-up land", "mass"),
        ("buildings", "plural"),
        ("houses", "plural"),
    ),
    5: (  # Barren
        ("bare ground", "mass"),
        ("bare land", "mass"),
        ("barren land", "mass"),
        ("bare soil", "mass"),
        ("rocky ground", "mass"),
        ("exposed rock", "mass"),
    ),
    6: (  # Water (shape unknown)
        ("water", "mass"),
        ("open water", "mass"),
        ("surface water", "mass"),
        ("a water body", "single"),
    ),
}

# Water by shape and size band ("small" < 5 %, "large" >= 40 %).
WATER_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "line": (
        ("a river", "single"),
        ("a canal", "single"),
        ("a stream", "single"),
        ("a narrow river", "single"),
        ("a winding river", "single"),
        ("a watercourse", "single"),
    ),
    "line-large": (
        ("a wide river", "single"),
        ("a broad river", "single"),
        ("a large river", "single"),
    ),
    "blob": (
        ("a lake", "single"),
        ("a reservoir", "single"),
        ("a body of water", "single"),
        ("open water", "mass"),
    ),
    "blob-small": (
        ("a pond", "single"),
        ("a small lake", "single"),
        ("a small reservoir", "single"),
        ("a small body of water", "single"),
    ),
    "blob-large": (
        ("a large lake", "single"),
        ("open water", "mass"),
        ("a wide expanse of water", "single"),
        ("a large reservoir", "single"),
        ("a broad lake", "single"),
        ("a large body of water", "single"),
        ("an expanse of open water", "single"),
    ),
}

# Built-up land by pattern and size band ("small" < 5 %, "large" >= 30 %).
BUILTUP_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "compact-small": (
        ("a hamlet", "single"),
        ("a small village", "single"),
        ("a small settlement", "single"),
        ("a cluster of buildings", "single"),
        ("a cluster of houses", "single"),
    ),
    "compact": (
        ("a village", "single"),
        ("a settlement", "single"),
        ("a small town", "single"),
        ("a built-up area", "single"),
        ("a compact settlement", "single"),
    ),
    "compact-large": (
        ("a town", "single"),
        ("an urban area", "single"),
        ("a built-up area", "single"),
        ("dense urban land", "mass"),
        ("a city", "single"),
        ("a dense residential area", "single"),
        ("an urban district", "single"),
        ("a densely settled town", "single"),
    ),
    "scattered": (
        ("scattered buildings", "plural"),
        ("scattered houses", "plural"),
        ("isolated buildings", "plural"),
        ("dispersed settlements", "plural"),
        ("scattered settlements", "plural"),
    ),
    "scattered-large": (
        ("scattered urban land", "mass"),
        ("dispersed built-up land", "mass"),
        ("sprawling settlements", "plural"),
        ("suburban housing", "mass"),
    ),
}

#: Classes whose plural nouns read well after "a scattering of".
SCATTERABLE = frozenset({0, 1, 4})

#: Quantity phrases (keys of the lexicon's ``quantities``) by the nouns they precede.
QUANTITY_MASS: tuple[str, ...] = (
    "some",
    "a little",
    "a bit of",
    "a small amount of",
    "traces of",
    "small patches of",
    "small areas of",
    "large areas of",
    "large expanses of",
    "broad expanses of",
    "extensive",
)
QUANTITY_PLURAL: tuple[str, ...] = ("some", "a few", "a scattering of")
#: Quantity phrases whose own head noun sets the number of the noun phrase, so the verb
#: after it: "large areas of tree cover are", "a scattering of houses is". The others
#: ("some", "a few", "extensive") leave the number to the noun ("some fields are").
PLURAL_HEADS = frozenset(
    {
        "small patches of",
        "small areas of",
        "large areas of",
        "large expanses of",
        "broad expanses of",
        "traces of",
    }
)
SINGULAR_HEADS = frozenset({"a bit of", "a small amount of", "a scattering of"})
#: Adverbs that lead the dominant class ("mostly farmland", "almost entirely covered by").
ADVERBS: tuple[str, ...] = (
    "mostly",
    "mainly",
    "largely",
    "predominantly",
    "primarily",
    "chiefly",
    "almost entirely",
    "almost completely",
    "nearly entirely",
    "entirely",
    "overwhelmingly",
)
#: Shares of the scene ("covers about half of the scene").
FRACTION_WORDS: tuple[str, ...] = (
    "about half",
    "roughly half",
    "around half",
    "about a third",
    "roughly a third",
    "about a quarter",
    "roughly a quarter",
    "two thirds",
    "about two thirds",
    "three quarters",
    "about three quarters",
    "almost all",
    "nearly all",
)

SCENE_NOUNS: tuple[str, ...] = ("scene", "image", "area", "tile", "view", "patch", "picture")
#: Openings for any noun ("An aerial view of a lake").
OPENINGS: tuple[str, ...] = (
    "A satellite image of",
    "An aerial view of",
    "A view of",
    "An overhead view of",
    "A satellite view of",
    "A tile showing",
    "An image showing",
    "Overhead imagery of",
    "A top-down view of",
    "A bird's-eye view of",
    "Satellite imagery of",
    "A picture of",
    "This image shows",
    "The tile shows",
)
#: Openings for land nouns only ("A landscape of farmland", not "... of a lake").
LAND_OPENINGS: tuple[str, ...] = (
    "A landscape of",
    "An area of",
    "A scene of",
    "A region of",
    "A stretch of",
    "A tract of",
    "Terrain of",
)
#: Adjectives for a class that fills (almost) the whole scene (mass nouns).
FULL_ADJECTIVES: tuple[str, ...] = (
    "continuous",
    "unbroken",
    "uniform",
    "homogeneous",
    "contiguous",
    "uninterrupted",
)
#: Second sentences for a scene holding one class only (no class words in them).
ONLY_CLASS: tuple[str, ...] = (
    "No other land cover is visible.",
    "Nothing else can be seen.",
    "There is no other land cover in the {scene}.",
    "It is the only land cover present.",
    "No other land-cover type appears.",
    "The {scene} holds nothing else.",
    "Nothing else appears in the {scene}.",
    "It is the only land cover in the {scene}.",
)
COVER_VERBS: tuple[str, ...] = ("covers", "occupies", "makes up", "takes up", "accounts for")
WITH_LINKS: tuple[str, ...] = (
    ", with",
    " with",
    ", interspersed with",
    " interspersed with",
    ", mixed with",
    " alongside",
    ", along with",
    ", together with",
    ", broken up by",
)
