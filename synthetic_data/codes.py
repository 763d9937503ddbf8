"""Code systems and the codes the generator uses (the valid ones).

The terminology check (pipelines) flags codes outside the shipped code lists; the
``code.unknown`` defects use codes from ``UNKNOWN_*`` below, which exist in no list.
"""

from __future__ import annotations

ICD10SE_SYSTEM = "http://hl7.org/fhir/sid/icd-10-se"
ATC_SYSTEM = "http://www.whocc.no/atc"
KVA_SYSTEM = "urn:oid:1.2.752.116.1.3.2.1.4"
NPU_SYSTEM = "http://www.npu-terminology.org"
LOINC_SYSTEM = "http://loinc.org"
UCUM_SYSTEM = "http://unitsofmeasure.org"
SNOMED_SYSTEM = "http://snomed.info/sct"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

ICD10SE: dict[str, str] = {
    "E10.9": "Diabetes mellitus typ 1 utan komplikationer",
    "E10.2": "Diabetes mellitus typ 1 med njurkomplikationer",
    "E10.3": "Diabetes mellitus typ 1 med ögonkomplikationer",
    "E10.4": "Diabetes mellitus typ 1 med neurologiska komplikationer",
    "E10.5": "Diabetes mellitus typ 1 med perifera kärlkomplikationer",
    "E11.9": "Diabetes mellitus typ 2 utan komplikationer",
    "E11.2": "Diabetes mellitus typ 2 med njurkomplikationer",
    "E11.3": "Diabetes mellitus typ 2 med ögonkomplikationer",
    "E11.4": "Diabetes mellitus typ 2 med neurologiska komplikationer",
    "E11.5": "Diabetes mellitus typ 2 med perifera kärlkomplikationer",
    "E13.9": "Annan specificerad diabetes utan komplikationer",
    "E14.9": "Ospecificerad diabetes utan komplikationer",
    "I10": "Essentiell hypertoni",
    "E78.0": "Ren hyperkolesterolemi",
    "N18.3": "Kronisk njursjukdom, stadium 3",
    "E66.9": "Fetma, ospecificerad",
    "I25.1": "Aterosklerotisk hjärtsjukdom",
    "I48.9": "Förmaksflimmer och förmaksfladder, ospecificerat",
    "G63.2": "Diabetesneuropati",
    "H36.0": "Diabetesretinopati",
    "F32.9": "Depressiv episod, ospecificerad",
    "E03.9": "Hypotyreos, ospecificerad",
    "J18.9": "Pneumoni, ospecificerad",
    "S72.0": "Fraktur på lårbenshalsen",
    "E16.2": "Hypoglykemi, ospecificerad",
}

ATC: dict[str, str] = {
    "A10BA02": "metformin",
    "A10AE04": "insulin glargin",
    "A10AB05": "insulin aspart",
    "A10BJ06": "semaglutid",
    "A10BK01": "dapagliflozin",
    "A10BK03": "empagliflozin",
    "A10BH01": "sitagliptin",
    "A10BB12": "glimepirid",
    "C09AA05": "ramipril",
    "C09CA01": "losartan",
    "C10AA01": "simvastatin",
    "C10AA05": "atorvastatin",
    "C08CA01": "amlodipin",
    "B01AC06": "acetylsalicylsyra",
}

# KVÅ (Klassifikation av vårdåtgärder). Only procedures the generator uses.
KVA: dict[str, str] = {
    "AF037": "Vilo-EKG",
    "CKC12": "Fotokoagulation av näthinna med laser",
    "CJE20": "Extrakapsulär extraktion av lins med insättning av konstgjord lins",
    "NHQ09": "Amputation av tå",
    "NGQ19": "Amputation av underben",
    "FNG05": "Perkutan koronar intervention med stent",
}

# Codes that exist in no code list: used only by `code.unknown` defects.
UNKNOWN_ICD10SE = ("E19.9", "E11.99", "X99.9")
UNKNOWN_ATC = ("A10XX99", "C99ZZ01")

# HbA1c in mmol/mol (IFCC): NPU and LOINC codes.
HBA1C_NPU = ("NPU27300", "Hb(B)—Hemoglobin A1c(IFCC); subst.frakt. = ? mmol/mol")
HBA1C_LOINC = ("59261-8", "Hemoglobin A1c/Hemoglobin.total in Blood by IFCC protocol")
BMI_LOINC = ("39156-5", "Body mass index (BMI) [Ratio]")
SYSTOLIC_LOINC = ("8480-6", "Systolic blood pressure")
DIASTOLIC_LOINC = ("8462-4", "Diastolic blood pressure")
WEIGHT_LOINC = ("29463-7", "Body weight")

# EQ-5D-5L as a FHIR Questionnaire.
EQ5D_QUESTIONNAIRE = "http://euroqol.org/fhir/Questionnaire/eq-5d-5l-sv"
EQ5D_LEVEL_SYSTEM = "http://euroqol.org/fhir/CodeSystem/eq-5d-5l-level"
#: linkId per dimension, in questionnaire order; value is valueCoding (code "1".."5")
EQ5D_DIMENSION_LINK_IDS = (
    "mobility",
    "self-care",
    "usual-activities",
    "pain-discomfort",
    "anxiety-depression",
)
#: linkId of EQ VAS; value is valueInteger 0..100
EQ5D_VAS_LINK_ID = "eq-vas"
