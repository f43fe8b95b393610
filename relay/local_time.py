"""A moment as the buyer's country reads it, with the zone named: "28/11/2025 16:20
(horário de Brasília)".

Hotmart sends the buyer's country (`checkout_country.iso`) and never a time zone, so
each country maps to the zone most of its people live in, and the text names that
zone's city: a reader elsewhere in the country can still tell what time is meant.
Countries spanning several zones with no dominant one (the US, Canada) are absent on
purpose and, like an unknown country, are shown in UTC, named as such.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# ISO country -> (IANA zone, the zone's city, or (es, pt, en) names where they differ).
_COUNTRY_ZONES: dict[str, tuple[str, str | tuple[str, str, str]]] = {
    "AR": ("America/Argentina/Buenos_Aires", "Buenos Aires"),
    "BO": ("America/La_Paz", "La Paz"),
    "BR": ("America/Sao_Paulo", "Brasília"),  # "horário de Brasília", as Brazil says it
    "CL": ("America/Santiago", "Santiago"),
    "CO": ("America/Bogota", "Bogotá"),
    "CR": ("America/Costa_Rica", "San José"),
    "DO": ("America/Santo_Domingo", "Santo Domingo"),
    "EC": ("America/Guayaquil", "Quito"),
    "ES": ("Europe/Madrid", "Madrid"),
    "GT": ("America/Guatemala", ("Guatemala", "Cidade da Guatemala", "Guatemala City")),
    "HN": ("America/Tegucigalpa", "Tegucigalpa"),
    "MX": ("America/Mexico_City", ("Ciudad de México", "Cidade do México", "Mexico City")),
    "NI": ("America/Managua", "Managua"),
    "PA": ("America/Panama", ("Panamá", "Cidade do Panamá", "Panama City")),
    "PE": ("America/Lima", "Lima"),
    "PR": ("America/Puerto_Rico", "San Juan"),
    "PT": ("Europe/Lisbon", ("Lisboa", "Lisboa", "Lisbon")),
    "PY": ("America/Asuncion", "Asunción"),
    "SV": ("America/El_Salvador", "San Salvador"),
    "UY": ("America/Montevideo", "Montevideo"),
    "VE": ("America/Caracas", "Caracas"),
}
_LOCALES = ("es", "pt", "en")
_ZONE_WORDS = {"es": "hora de {}", "pt": "horário de {}", "en": "{} time"}
# Day first, as Latin America and Iberia write dates; English gets ISO order, which no
# reader on either side of the Atlantic can misread.
_DATE_FORMATS = {"es": "%d/%m/%Y %H:%M", "pt": "%d/%m/%Y %H:%M"}
_ISO_FORMAT = "%Y-%m-%d %H:%M"


def format_local(moment: datetime, country_iso: str = "", locale: str = "") -> str:
    """`moment` in the zone of `country_iso`, named in `locale`; in UTC when unknown."""
    pattern = _DATE_FORMATS.get(locale, _ISO_FORMAT)
    found = _COUNTRY_ZONES.get(country_iso.upper())
    if found is not None:
        zone_name, city = found
        zone = zone_for(zone_name)
        if zone is not UTC:
            if not isinstance(city, str):
                city = city[_LOCALES.index(locale) if locale in _LOCALES else 2]
            words = _ZONE_WORDS.get(locale, _ZONE_WORDS["en"]).format(city)
            return f"{moment.astimezone(zone).strftime(pattern)} ({words})"
    return f"{moment.astimezone(UTC).strftime(pattern)} UTC"


def zone_for(name: str) -> tzinfo:
    """The IANA zone `name`, or UTC when this machine has no data for it.

    `tzdata` is a dependency so that the data is there even where the system has
    none (Windows, slim containers); should a zone still be missing, the time is
    shown in UTC and says so, rather than in a zone it is not.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC
