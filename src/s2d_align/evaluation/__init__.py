"""The field's metrics: NLG (pycocoevalcap), clinical efficacy (CheXpert labels), RadGraph F1."""
