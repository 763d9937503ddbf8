"""Places and names for synthetic persons: postal codes consistent with each region's county."""

from __future__ import annotations

REGIONS: tuple[str, ...] = ("region_uppsala", "region_orebro", "region_skane")

#: Share of the population living in each region (roughly by population size).
REGION_WEIGHTS: tuple[float, ...] = (0.27, 0.22, 0.51)

#: region -> (city, three-digit postal prefixes) ; prefixes stay inside the county's ranges:
#: Uppsala 74xxx–75xxx, Örebro 69xxx–71xxx, Skåne 20xxx–29xxx.
CITIES: dict[str, tuple[tuple[str, tuple[int, ...]], ...]] = {
    "region_uppsala": (
        ("Uppsala", (751, 752, 753, 754, 755, 756, 757)),
        ("Enköping", (745,)),
        ("Knivsta", (741,)),
        ("Östhammar", (742,)),
        ("Heby", (744,)),
    ),
    "region_orebro": (
        ("Örebro", (702, 703, 705)),
        ("Karlskoga", (691,)),
        ("Kumla", (692,)),
        ("Hallsberg", (694,)),
        ("Askersund", (696,)),
        ("Lindesberg", (711,)),
        ("Nora", (713,)),
    ),
    "region_skane": (
        ("Malmö", (211, 212, 213, 214, 215, 216, 217)),
        ("Lund", (222, 223, 224, 226, 227)),
        ("Helsingborg", (252, 253, 254, 256)),
        ("Kristianstad", (291,)),
        ("Trelleborg", (231,)),
        ("Ystad", (271,)),
        ("Landskrona", (261,)),
        ("Hässleholm", (281,)),
        ("Ängelholm", (262,)),
    ),
}

#: Postal-code ranges (inclusive, 5 digits) per region, for tests and checks.
POSTAL_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "region_uppsala": ((74000, 75999),),
    "region_orebro": ((69000, 71999),),
    "region_skane": ((20000, 29999),),
}

REGION_DISPLAY: dict[str, str] = {
    "region_uppsala": "Region Uppsala",
    "region_orebro": "Region Örebro län",
    "region_skane": "Region Skåne",
}

STREETS: tuple[str, ...] = (
    "Storgatan", "Kyrkogatan", "Drottninggatan", "Kungsgatan", "Skolgatan", "Järnvägsgatan",
    "Björkvägen", "Ekvägen", "Lindvägen", "Tallvägen", "Granvägen", "Rönnvägen", "Sjövägen",
    "Ängsvägen", "Åkervägen", "Östra vägen", "Västra vägen", "Bäckvägen", "Parkgatan", "Torggatan",
    "Smedjegatan", "Trädgårdsgatan", "Solvägen", "Hagvägen", "Lärkvägen", "Mossvägen",
)

FEMALE_NAMES: tuple[str, ...] = (
    "Anna", "Eva", "Maria", "Karin", "Sara", "Kristina", "Lena", "Emma", "Kerstin", "Ingrid",
    "Marie", "Malin", "Jenny", "Hanna", "Linda", "Elin", "Annika", "Susanne", "Birgitta", "Åsa",
    "Märta", "Ingegärd", "Gunnel", "Ulla", "Margareta", "Elsa", "Maja", "Astrid", "Signe", "Linnéa",
)

MALE_NAMES: tuple[str, ...] = (
    "Lars", "Anders", "Johan", "Mikael", "Erik", "Per", "Karl", "Peter", "Thomas", "Jan",
    "Daniel", "Fredrik", "Hans", "Bengt", "Mats", "Magnus", "Stefan", "Göran", "Björn", "Åke",
    "Sören", "Örjan", "Olof", "Gustav", "Nils", "Oskar", "Axel", "Ture", "Håkan", "Jörgen",
)

FAMILY_NAMES: tuple[str, ...] = (
    "Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson",
    "Svensson", "Gustafsson", "Pettersson", "Jonsson", "Jansson", "Hansson", "Bengtsson",
    "Jönsson", "Lindberg", "Jakobsson", "Magnusson", "Lindström", "Olofsson", "Lindqvist",
    "Lindgren", "Berg", "Axelsson", "Bergström", "Lundberg", "Lundqvist", "Mattsson", "Berglund",
    "Fredriksson", "Sandberg", "Henriksson", "Forsberg", "Sjöberg", "Wallin", "Engström", "Håkansson",
    "Danielsson", "Lundin", "Björk", "Gunnarsson", "Holm", "Samuelsson", "Fransson", "Wikström",
    "Isaksson", "Bergman", "Nyström", "Holmberg", "Åberg", "Öberg", "Ström", "Söderberg", "Nordström",
)

#: Names with å/ä/ö only (used for the cp1252 supplement file, where they must be non-ASCII).
NON_ASCII_FAMILY_NAMES: tuple[str, ...] = tuple(
    n for n in FAMILY_NAMES if any(c in n for c in "åäöÅÄÖ")
)
NON_ASCII_GIVEN_NAMES: tuple[str, ...] = tuple(
    n for n in FEMALE_NAMES + MALE_NAMES if any(c in n for c in "åäöéÅÄÖ")
)
