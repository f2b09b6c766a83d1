"""Identifiers a provider directory checks: the US National Provider Identifier (NPI), ISO 3166-1
alpha-2 country codes and ISO 639-1 language codes. Pure functions and constant data, shared by the
schemas (early, field-level 422) and the service (the rule itself, for every caller)."""

from __future__ import annotations

# The NPI check digit is the Luhn check digit of the 9 leading digits prefixed with "80840" (the
# ISO 7812 issuer prefix of US health care), per CMS' "NPI check digit" standard.
_NPI_PREFIX = "80840"


def luhn_check_digit(digits: str) -> int:
    """The digit that, appended to ``digits``, makes a valid Luhn number."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:  # every second digit from the right, starting with the rightmost
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def npi_check_digit(first_nine: str) -> int:
    return luhn_check_digit(_NPI_PREFIX + first_nine)


def npi_problem(npi: str) -> str | None:
    """Why ``npi`` is not a valid NPI, or None when it is."""
    if len(npi) != 10 or not npi.isascii() or not npi.isdigit():
        return "An NPI is exactly 10 digits."
    expected = npi_check_digit(npi[:9])
    if int(npi[9]) != expected:
        return (f"NPI {npi} fails the check digit: the last digit should be {expected} "
                f"(Luhn over 80840 and the first nine digits). Check for a typo.")
    return None


def make_npi(first_nine: str) -> str:
    """A valid NPI from its first nine digits (demo data, tests)."""
    return first_nine + str(npi_check_digit(first_nine))


COUNTRIES = tuple("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO
JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR
MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV
TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split())

LANGUAGES = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en eo
es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka
kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng
nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su
sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
""".split())
