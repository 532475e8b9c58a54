"""CoC item numbers and readable labels for IVI 2.0 elements, for the pages people read.

The numbers follow the items of the CoC models in Annex VIII of Implementing Regulation (EU)
2020/683, for the elements whose item those models make clear; the readiness rules cite the same
numbers. An element without a number here is shown with its label alone. Labels come from the element
names, spelled out, with the abbreviations of the field kept in capitals.
"""

from __future__ import annotations

import re

ITEMS: dict[str, str] = {
    "Make": "0.1",
    "Type": "0.2",
    "Variant": "0.2",
    "Version": "0.2",
    "CommercialName": "0.2.1",
    "TestFamilyIdentifier": "0.2.3",
    "TestFamilyIdentifierValue": "0.2.3",
    "VehicleCategory": "0.4",
    "ManufacturerStageNumber": "0.5",
    "ManufacturerName": "0.5",
    "ManufacturerAddressLine1": "0.5",
    "ManufacturerAddressLine2": "0.5",
    "ManufacturerAddressLine3": "0.5",
    "ManufacturerPlaceOfResidence": "0.5",
    "ManufacturerCountryOfResidence": "0.5",
    "MethodAttachmentStatutoryPlate": "0.6",
    "LocationMarkingsSubject": "0.6",
    "LocationMarkingsVehiclePart": "0.6",
    "LocationMarkingsVehiclePartSide": "0.6",
    "LocationMarkingsVehiclePartSideSection": "0.6",
    "VehicleIdentificationNumber": "0.10",
    "DateManufactureVehicle": "0.11",
    "NumberOfAxles": "1",
    "NumberOfWheels": "1",
    "NumberOfAxlesWithTwinWheels": "1.1",
    "NumberOfSteeredAxles": "2",
    "NumberOfPoweredAxles": "3",
    "Wheelbase": "4",
    "AxleSpacing": "4.1",
    "Length": "5",
    "Width": "6",
    "Height": "7",
    "LengthLoadingArea": "11",
    "RearOverhang": "12",
    "MassInRunningOrder": "13",
    "DistributionMassRunningOrderAxle": "13.1",
    "ActualMass": "13.2",
    "TechnicallyPermissibleMaximumLadenMass": "16.1",
    "TechnicallyPermissibleMassAxle": "16.2",
    "TechnicallyPermissibleMaximumCombinationMass": "16.4",
    "TechnicallyPermissibleMaximumTowableMass": "18",
    "TechnicallyPermissibleMaximumStaticVerticalMassCouplingPoint": "19",
    "ManufacturerEnergyConvertor": "20",
    "EnergyConvertorCodeMarkedOnEnergyConvertor": "21",
    "WorkingPrinciple": "22",
    "CombustionCycle": "22",
    "NumberOfCylinders": "24",
    "ArrangementCylinders": "24",
    "PureElectricVehicleIndicator": "23",
    "ClassHybridVehicle": "23.1",
    "EngineCapacity": "25",
    "EnergySource": "26",
    "FuelType": "26.1",
    "MaximumNetPowerCombustion": "27.1",
    "EngineSpeedMaximumNetPower": "27.1",
    "MaximumNetPowerElectric": "27.3",
    "Maximum30MinutesPower": "27.4",
    "GearboxType": "28",
    "MaximumSpeed": "29",
    "AxleTrack": "30",
    "TyreSize": "35",
    "LoadCapacityIndexSingleWheel": "35",
    "LoadCapacityIndexTwinWheel": "35",
    "SpeedCategorySymbol": "35",
    "RimSize": "35",
    "RimOffSet": "35",
    "RollingResistanceClass": "35",
    "TyreCategory": "35",
    "TyreFittedProductionIndicator": "35",
    "CodeForBodywork": "38",
    "Colour": "40",
    "NumberOfDoors": "41",
    "NumberOfSeatingPositionsIncludingDriver": "42",
    "SoundLevelStationary": "46",
    "SoundLevelStationaryEngineSpeed": "46",
    "SoundLevelDriveBy": "46",
    "ExhaustEmissionLevel": "47",
    "WltpEmissionTestMass": "47.1",
    "WltpFrontalArea": "47.1",
    "WltpRoadLoadCoefficientF0": "47.1",
    "WltpRoadLoadCoefficientF1": "47.1",
    "WltpRoadLoadCoefficientF2": "47.1",
    "DrivingCycleClass": "47.1",
    "ExhaustEmissionLatestRegulationNumber": "48",
    "WltpCo2Low": "49",
    "WltpCo2Medium": "49",
    "WltpCo2High": "49",
    "WltpCo2ExtraHigh": "49",
    "WltpCo2Combined": "49",
    "WltpCo2WeightedCombined": "49",
    "WltpFuelConsumptionLow": "49",
    "WltpFuelConsumptionMedium": "49",
    "WltpFuelConsumptionHigh": "49",
    "WltpFuelConsumptionExtraHigh": "49",
    "WltpFuelConsumptionCombined": "49",
    "WltpFuelConsumptionWeightedCombined": "49",
    "SpecialPurposeDesignation": "51",
    "Remark": "52",
}

# Words of element names that the field writes in capitals or its own way. A word with digits
# listed here (a chemical formula) keeps them, and other words are written apart from their digits.
_SPELLING = {
    "Wltp": "WLTP",
    "Co2": "CO2",
    "Rde": "RDE",
    "Eu": "EU",
    "Vecto": "VECTO",
    "Ivi": "IVI",
    "Xsd": "XSD",
    "Vin": "VIN",
    "Iso": "ISO",
    "Nox": "NOx",
    "Thc": "THC",
    "Nmhc": "NMHC",
    "Hc": "HC",
    "Ch4": "CH4",
    "Nh3": "NH3",
    "Pm": "PM",
    "Pn": "PN",
    "Co": "CO",
    "Atct": "ATCT",
    "Whsc": "WHSC",
    "Whtc": "WHTC",
    "Nrsc": "NRSC",
    "Nrtc": "NRTC",
    "Coc": "CoC",
    "Dc": "Dc",
    "Id": "ID",
}
_WORD = re.compile(r"[A-Z]{2,}(?=[A-Z][a-z]|[0-9]|$)|[A-Z][a-z]+[0-9]*|[A-Z][0-9]*|[0-9]+[a-z]*|[a-z]+")
# A capitalised word and the number after it, as in Line1 or Certified155. A capital letter with
# digits (F0, M3) is a symbol and stays as it is.
_WORD_AND_NUMBER = re.compile(r"([A-Z][a-z]+)([0-9]*)")


def _spell(word: str, first: bool) -> list[str]:
    if word in _SPELLING:
        return [_SPELLING[word]]
    parts = _WORD_AND_NUMBER.fullmatch(word)
    if parts is None:
        return [word]
    text, number = parts.groups()
    spelled = _SPELLING.get(text, text if first else text.lower())
    return [spelled, number] if number else [spelled]


def label(name: str) -> str:
    """Spell an element name out, as in MassInRunningOrder: "Mass in running order".

    Numbers stand apart from words (ManufacturerAddressLine1: "Manufacturer address line 1"),
    except in the formulae of _SPELLING such as CO2.
    """
    words = _WORD.findall(name) or [name]
    spelled = [part for index, word in enumerate(words) for part in _spell(word, index == 0)]
    return " ".join(spelled)


def item(name: str) -> str | None:
    return ITEMS.get(name)


# The unit of each value that has one, as the CoC models print it.
_UNIT_ELEMENTS: dict[str, tuple[str, ...]] = {
    "mm": (
        "Wheelbase",
        "AxleSpacing",
        "Length",
        "Width",
        "Height",
        "LengthLoadingArea",
        "RearOverhang",
        "AxleTrack",
    ),
    "kg": (
        "MassInRunningOrder",
        "ActualMass",
        "DistributionMassRunningOrderAxle",
        "TechnicallyPermissibleMaximumLadenMass",
        "TechnicallyPermissibleMassAxle",
        "TechnicallyPermissibleMaximumCombinationMass",
        "TechnicallyPermissibleMaximumTowableMass",
        "TechnicallyPermissibleMaximumStaticVerticalMassCouplingPoint",
        "WltpEmissionTestMass",
    ),
    "kW": ("MaximumNetPowerCombustion", "MaximumNetPowerElectric", "Maximum30MinutesPower"),
    "min⁻¹": ("EngineSpeedMaximumNetPower", "SoundLevelStationaryEngineSpeed"),
    "cm³": ("EngineCapacity",),
    "km/h": ("MaximumSpeed",),
    "m²": ("WltpFrontalArea",),
    "dB(A)": ("SoundLevelStationary", "SoundLevelDriveBy"),
    "g/km": (
        "WltpCo2Low",
        "WltpCo2Medium",
        "WltpCo2High",
        "WltpCo2ExtraHigh",
        "WltpCo2Combined",
        "WltpCo2WeightedCombined",
    ),
}
UNITS: dict[str, str] = {name: unit for unit, names in _UNIT_ELEMENTS.items() for name in names}

# The meanings of the codes of some code lists, as the IVI 2.0 documentation names them.
# Other codes are shown as they are.
CODE_MEANINGS: dict[str, dict[str, str]] = {
    "EnergySource": {
        "10": "petrol",
        "11": "petrol E5",
        "12": "petrol E10",
        "15": "ethanol",
        "16": "ethanol E85",
        "19": "mixture",
        "20": "diesel",
        "21": "biodiesel",
        "22": "ED95",
        "30": "LPG",
        "40": "CNG",
        "44": "biomethane",
        "50": "hydrogen",
        "55": "H2NG",
        "60": "LNG",
        "90": "other",
        "91": "compressed air",
        "95": "electricity",
    },
    "StageOfCompletion": {"C": "complete", "I": "incomplete", "V": "completed"},
    "WorkingPrinciple": {
        "INTPI": "internal combustion, positive ignition",
        "INTCI": "internal combustion, compression ignition",
        "EXTPI": "external combustion, positive ignition",
        "EXTCI": "external combustion, compression ignition",
        "ELECT": "electric",
        "CMPRA": "compressed air",
        "TRBNE": "turbine",
    },
    "CombustionCycle": {"2ST": "two-stroke", "4ST": "four-stroke", "ROT": "rotary", "OTH": "other"},
    "BrakedTypeTrail": {"BRK": "braked", "UNB": "unbraked"},
}


def unit(name: str) -> str | None:
    return UNITS.get(name)


def meaning(name: str, code: str) -> str | None:
    """Say what a code stands for; indicators read Y and N as yes and no."""
    if name.endswith("Indicator"):
        return {"Y": "yes", "N": "no"}.get(code)
    return CODE_MEANINGS.get(name, {}).get(code)
