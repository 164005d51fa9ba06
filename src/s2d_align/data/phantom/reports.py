"""Reports for phantom studies: FINDINGS in MIMIC-CXR / IU X-Ray phrasing, with labels and a RadGraph graph.

A report is a list of *statements*, each one sentence or two about one thing
(a finding and its interval change, a normal organ, a routine negation).
:data:`PHRASES` lists every statement's templates, written in the annotated
markup of :mod:`s2d_align.data.phantom.markup`, and :data:`STATEMENT_LABELS`
says what each statement asserts about the CheXpert observations. A report's
labels are the union of its statements' labels (positive over uncertain over
negative, as the CheXpert labeler aggregates), plus the labeler's No Finding
rule. So labels follow the text, not the drawing: a resolved effusion is 0, an
unchanged small effusion is 1, a "possible" effusion -1, and an observation
the report never names is None.

The phrasing is kept unambiguous for rule-based labelers (see
:data:`MENTION_WORDS`, :data:`NEGATION_CUES` and :data:`UNCERTAINTY_CUES`):
a sentence names observations of one polarity only; negated sentences carry a
negation cue, uncertain ones an uncertainty cue, positive ones neither; no
observation's word appears in another's sentence ("lines" only ever means a
catheter, there are no "Kerley lines" or "pleural lines").

Wording varies (several templates per statement, modest reordering of the
report's sections, optional routine statements), which reproduces the
templating problem of real report corpora.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from s2d_align.chexpert import OBSERVATIONS
from s2d_align.data.phantom.markup import Parsed, detokenize, parse, sentences
from s2d_align.data.phantom.patients import OBSERVATION_OF, Finding, StudyPlan

POSITIVE_STATUSES = ("present", "new", "unchanged", "worse", "better")

# --------------------------------------------------------------------------- phrase templates

# The pneumonia sentence that follows every consolidation ("~n" on the consolidation points at it).
PNEUMONIA_PHRASES = (
    "This is concerning for pneumonia/U#n .",
    "Findings may represent pneumonia/U#n .",
    "This likely represents pneumonia/U#n .",
    "Pneumonia/U#n cannot be excluded .",
    "Findings are suggestive of pneumonia/U#n .",
)

PHRASES: dict[str, tuple[str, ...]] = {
    # ---- normal and routine statements
    "comparison": (
        "Comparison is made with the prior study .",
        "The prior radiograph is available for comparison .",
    ),
    "no_change": (
        "No significant interval change .",
        "There has been no significant interval change .",
    ),
    "lungs.clear": (
        "The lungs/A#l are clear/DP@l .",
        "Lungs/A#l are well_expanded/DP@l and clear/DP@l .",
        "The lungs/A#l are well_aerated/DP@l and clear/DP@l .",
        "The lungs/A#l are clear/DP@l bilaterally .",
    ),
    "lungs.clear_no_consolidation": (
        "The lungs/A#l are clear/DP@l without focal/DA>c consolidation/DA#c .",
        "Lungs/A#l are clear/DP@l , without focal/DA>c consolidation/DA#c .",
    ),
    "lung.other_clear": (
        "The {other}/A>l lung/A#l is clear/DP@l .",
        "The {other}/A>l lung/A#l is grossly clear/DP@l .",
    ),
    "heart.normal": (
        "Heart/A>s size/A#s is normal/DP@s .",
        "The heart/A#h is normal/DP@h in size .",
        "Normal/DP@s heart/A>s size/A#s .",
    ),
    "cardiomediastinal.normal": (
        "The cardiomediastinal/A>s silhouette/A#s is within_normal_limits/DP@s .",
        "The cardiomediastinal/A>s silhouette/A#s is normal/DP@s .",
        "Normal/DP@s cardiomediastinal/A>s silhouette/A#s .",
    ),
    "heart_mediastinum.normal": (
        "Heart/A>s size/A#s and mediastinal/A>m contours/A#m are normal/DP@s@m .",
        "The heart/A#h and mediastinum/A#m are within_normal_limits/DP@h@m .",
        "Normal/DP@s@m heart/A>s size/A#s and mediastinal/A>m contours/A#m .",
    ),
    "mediastinum.normal": (
        "The mediastinal/A>m contours/A#m are normal/DP@m .",
        "The mediastinal/A>m contours/A#m are unremarkable/DP@m .",
    ),
    "bones.normal": (
        "No acute/DA>x osseous/A#o abnormality/DA#x@o .",
        "The osseous/A>o structures/A#o are intact/DP@o .",
        "No acute/DA>x osseous/A#o abnormality/DA#x@o is seen .",
        "The visualized osseous/A>o structures/A#o are unremarkable/DP@o .",
    ),
    "negate.effusion_pneumothorax": (
        "No pleural/A#p effusion/DA@p or pneumothorax/DA .",
        "There is no pleural/A#p effusion/DA@p or pneumothorax/DA .",
        "No pleural/A#p effusion/DA@p or pneumothorax/DA is seen .",
        "There is no evidence of pleural/A#p effusion/DA@p or pneumothorax/DA .",
    ),
    "negate.consolidation_effusion_pneumothorax": (
        "No focal/DA>c consolidation/DA#c , pleural/A#p effusion/DA@p , or pneumothorax/DA .",
        "There is no focal/DA>c consolidation/DA#c , pleural/A#p effusion/DA@p or pneumothorax/DA .",
    ),
    "negate.effusion": (
        "No pleural/A#p effusion/DA@p .",
        "There is no pleural/A#p effusion/DA@p .",
    ),
    "negate.pneumothorax": (
        "No pneumothorax/DA .",
        "There is no pneumothorax/DA .",
        "No pneumothorax/DA is seen .",
    ),
    "negate.consolidation": (
        "There is no focal/DA>c consolidation/DA#c .",
        "No focal/DA>c consolidation/DA#c .",
        "No focal/DA>c consolidation/DA#c is seen .",
    ),
    "negate.edema": (
        "No pulmonary/A#u edema/DA@u .",
        "There is no pulmonary/A#u edema/DA@u .",
    ),
    "negate.lesion": (
        "No pulmonary/A#u nodules/DA@u or masses/DA@u .",
        "There are no pulmonary/A#u nodules/DA@u or masses/DA@u .",
    ),
    "negate.fracture": (
        "No acute/DA>f rib/A#r fracture/DA#f@r .",
        "No displaced/DA>f rib/A#r fracture/DA#f@r is seen .",
    ),
    # ---- pleural effusion: {size} {side} {effusion} {be} {is_are} {has} {a} {angle}
    "effusion.present": (
        "{size}/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p .",
        "There {be} {size}/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p .",
        "{size}/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p {is_are} present .",
        "{size}/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p with blunting/DP@a of the costophrenic/A>a {angle}/A#a .",
    ),
    "effusion.new": (
        "New/DP>e {size}/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p .",
        "There {be} new/DP>e {size}/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p .",
    ),
    "effusion.unchanged": (
        "Unchanged/DP>e {size}/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p .",
        "Stable/DP>e {size}/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p .",
        "Persistent/DP>e {size}/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p .",
        "The {size}/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p {is_are} unchanged/DP>e .",
    ),
    "effusion.worse": (
        "Increased/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p , now {size}/DP>e .",
        "Worsening/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p , now {size}/DP>e .",
        "Interval increase/DP>e in the {side}/A>p pleural/A#p {effusion}/DP#e@p , now {size}/DP>e .",
    ),
    "effusion.better": (
        "Decreased/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p , now {size}/DP>e .",
        "Improving/DP>e {side}/A>p pleural/A#p {effusion}/DP#e@p , now {size}/DP>e .",
        "Interval decrease/DP>e in the {side}/A>p pleural/A#p {effusion}/DP#e@p , now {size}/DP>e .",
    ),
    "effusion.resolved": (
        "Interval resolution of the {side}/A>p pleural/A#p {effusion}/DA@p .",
        "The previously seen {side}/A>p pleural/A#p {effusion}/DA@p {has} resolved .",
    ),
    "effusion.uncertain": (
        "Possible small/U>e {side}/A>p pleural/A#p {effusion}/U#e@p .",
        "{a} small/U>e {side}/A>p pleural/A#p {effusion}/U#e@p cannot be excluded .",
        "Blunting/DP@a~e of the {side}/A>a costophrenic/A>a {angle}/A#a may represent {a} small/U>e "
        "pleural/A#p {effusion}/U#e@p .",
    ),
    # ---- pneumothorax: {size} {side}
    "pneumothorax.present": (
        "{size}/DP>x {side}/A>a apical/A#a pneumothorax/DP#x@a .",
        "There is a {size}/DP>x {side}/A#s pneumothorax/DP#x@s .",
        "{size}/DP>x {side}/A#s pneumothorax/DP#x@s is present .",
    ),
    "pneumothorax.new": (
        "New/DP>x {size}/DP>x {side}/A#s pneumothorax/DP#x@s .",
        "There is a new/DP>x {size}/DP>x {side}/A#s pneumothorax/DP#x@s .",
    ),
    "pneumothorax.unchanged": (
        "Unchanged/DP>x {size}/DP>x {side}/A#s pneumothorax/DP#x@s .",
        "Stable/DP>x {size}/DP>x {side}/A#s pneumothorax/DP#x@s .",
        "The {size}/DP>x {side}/A#s pneumothorax/DP#x@s is unchanged/DP>x .",
    ),
    "pneumothorax.worse": (
        "Increased/DP>x {side}/A#s pneumothorax/DP#x@s , now {size}/DP>x .",
        "The {side}/A#s pneumothorax/DP#x@s has increased/DP>x in size and is now {size}/DP>x .",
    ),
    "pneumothorax.better": (
        "Decreased/DP>x {side}/A#s pneumothorax/DP#x@s , now {size}/DP>x .",
        "The {side}/A#s pneumothorax/DP#x@s has decreased/DP>x in size and is now {size}/DP>x .",
    ),
    "pneumothorax.resolved": (
        "Interval resolution of the {side}/A#s pneumothorax/DA@s .",
        "The {side}/A#s pneumothorax/DA@s has resolved .",
        "No residual/DA>x {side}/A#s pneumothorax/DA#x@s .",
    ),
    "pneumothorax.uncertain": (
        "Possible small/U>x {side}/A>a apical/A#a pneumothorax/U#x@a .",
        "A small/U>x {side}/A>a apical/A#a pneumothorax/U#x@a cannot be excluded .",
    ),
    # ---- cardiomegaly: {sev} {sevly}
    "cardiomegaly.present": (
        "{sev}/DP>c cardiomegaly/DP#c .",
        "There is {sev}/DP>c cardiomegaly/DP#c .",
        "The heart/A#h is {sevly}/DP>x enlarged/DP#x@h .",
        "Heart/A>s size/A#s is {sevly}/DP>x enlarged/DP#x@s .",
    ),
    "cardiomegaly.new": (
        "New/DP>c {sev}/DP>c cardiomegaly/DP#c .",
        "Interval development of {sev}/DP>c cardiomegaly/DP#c .",
    ),
    "cardiomegaly.unchanged": (
        "Stable/DP>c {sev}/DP>c cardiomegaly/DP#c .",
        "Unchanged/DP>c {sev}/DP>c cardiomegaly/DP#c .",
        "{sev}/DP>c cardiomegaly/DP#c is unchanged/DP>c .",
        "There is persistent/DP>c {sev}/DP>c cardiomegaly/DP#c .",
    ),
    "cardiomegaly.worse": (
        "Increased/DP>c cardiomegaly/DP#c , now {sev}/DP>c .",
        "Worsening/DP>c cardiomegaly/DP#c , now {sev}/DP>c .",
    ),
    "cardiomegaly.better": (
        "Decreased/DP>c cardiomegaly/DP#c , now {sev}/DP>c .",
    ),
    # ---- enlarged cardiomediastinum (widened mediastinum)
    "mediastinum.present": (
        "The mediastinum/A#m is widened/DP@m .",
        "There is widening/DP@m of the superior/A>m mediastinum/A#m .",
        "The superior/A>m mediastinum/A#m is widened/DP@m .",
        "Widening/DP@m of the mediastinum/A#m .",
    ),
    "mediastinum.new": (
        "New/DP>w widening/DP#w@m of the superior/A>m mediastinum/A#m .",
        "The mediastinum/A#m is newly/DP>w widened/DP#w@m .",
    ),
    "mediastinum.unchanged": (
        "The mediastinum/A#m remains widened/DP@m .",
        "Persistent/DP>w widening/DP#w@m of the mediastinum/A#m .",
    ),
    "mediastinum.worse": (
        "Increased/DP>w widening/DP#w@m of the mediastinum/A#m .",
        "The mediastinum/A#m is more/DP>w widened/DP#w@m .",
    ),
    "mediastinum.better": (
        "Decreased/DP>w widening/DP#w@m of the mediastinum/A#m .",
    ),
    # ---- consolidation: {lobe} "the right lower lobe" | "the lingula", {lobe_adj}, {pneumonia}
    "consolidation.present": (
        "Consolidation/DP#c@L~n in {lobe} . {pneumonia}",
        "There is {lobe_adj} consolidation/DP#c@L~n . {pneumonia}",
        "{lobe_adj} consolidation/DP#c@L~n is present . {pneumonia}",
        "Focal/DP>c consolidation/DP#c@L~n in {lobe} . {pneumonia}",
    ),
    "consolidation.new": (
        "New/DP>c {lobe_adj} consolidation/DP#c@L~n . {pneumonia}",
        "There is new/DP>c consolidation/DP#c@L~n in {lobe} . {pneumonia}",
    ),
    "consolidation.unchanged": (
        "Persistent/DP>c consolidation/DP#c@L~n in {lobe} . {pneumonia}",
        "Unchanged/DP>c {lobe_adj} consolidation/DP#c@L~n . {pneumonia}",
    ),
    "consolidation.worse": (
        "Worsening/DP>c consolidation/DP#c@L~n in {lobe} . {pneumonia}",
        "Increased/DP>c {lobe_adj} consolidation/DP#c@L~n . {pneumonia}",
    ),
    "consolidation.better": (
        "Improving/DP>c consolidation/DP#c@L~n in {lobe} . {pneumonia}",
        "Decreased/DP>c {lobe_adj} consolidation/DP#c@L~n . {pneumonia}",
    ),
    "consolidation.resolved": (
        "Interval resolution of the {lobe_adj} consolidation/DA@L .",
        "The previously seen {lobe_adj} consolidation/DA@L has resolved .",
    ),
    "consolidation.uncertain": (
        "Possible consolidation/U#c@L~n in {lobe} . {pneumonia}",
        "Early/U>c {lobe_adj} consolidation/U#c@L~n cannot be excluded . {pneumonia}",
    ),
    # ---- lung opacity: {zone} "the right lung base" | "both lung bases", {opacity} {be} {is_are} {has} {a}
    "opacity.present": (
        "Patchy/DP>o {opacity}/DP#o@L in {zone} .",
        "There {be} patchy/DP>o {opacity}/DP#o@L in {zone} .",
        "Patchy/DP>o {opacity}/DP#o@L {is_are} seen in {zone} .",
    ),
    "opacity.new": (
        "New/DP>o patchy/DP>o {opacity}/DP#o@L in {zone} .",
        "There {be} new/DP>o patchy/DP>o {opacity}/DP#o@L in {zone} .",
    ),
    "opacity.unchanged": (
        "Unchanged/DP>o patchy/DP>o {opacity}/DP#o@L in {zone} .",
        "Persistent/DP>o patchy/DP>o {opacity}/DP#o@L in {zone} .",
    ),
    "opacity.worse": (
        "Increased/DP>o patchy/DP>o {opacity}/DP#o@L in {zone} .",
        "Worsening/DP>o patchy/DP>o {opacity}/DP#o@L in {zone} .",
    ),
    "opacity.better": (
        "Decreased/DP>o patchy/DP>o {opacity}/DP#o@L in {zone} .",
        "Improved/DP>o patchy/DP>o {opacity}/DP#o@L in {zone} .",
    ),
    "opacity.resolved": (
        "Interval resolution of the {opacity}/DA@L in {zone} .",
        "The previously seen {opacity}/DA@L in {zone} {has} resolved .",
    ),
    "opacity.uncertain": (
        "Possible subtle/U>o {opacity}/U#o@L in {zone} .",
        "{a} subtle/U>o {opacity}/U#o@L in {zone} cannot be excluded .",
    ),
    # ---- atelectasis, plate-like at the base(s): {base} "the right lung base" | "both lung bases", {basilar}
    "atelectasis_plate.present": (
        "Plate-like/DP>t atelectasis/DP#t@L at {base} .",
        "{basilar} plate-like/DP>t atelectasis/DP#t@L .",
        "Mild/DP>t {basilar} atelectasis/DP#t@L .",
        "There is plate-like/DP>t atelectasis/DP#t@L at {base} .",
    ),
    "atelectasis_plate.new": (
        "New/DP>t plate-like/DP>t atelectasis/DP#t@L at {base} .",
        "New/DP>t {basilar} atelectasis/DP#t@L .",
    ),
    "atelectasis_plate.unchanged": (
        "Unchanged/DP>t {basilar} atelectasis/DP#t@L .",
        "Persistent/DP>t plate-like/DP>t atelectasis/DP#t@L at {base} .",
    ),
    "atelectasis_plate.worse": (
        "Increased/DP>t {basilar} atelectasis/DP#t@L .",
        "Worsening/DP>t plate-like/DP>t atelectasis/DP#t@L at {base} .",
    ),
    "atelectasis_plate.better": (
        "Improved/DP>t {basilar} atelectasis/DP#t@L .",
        "Decreased/DP>t plate-like/DP>t atelectasis/DP#t@L at {base} .",
    ),
    "atelectasis_plate.resolved": (
        "Interval resolution of the {basilar} atelectasis/DA@L .",
        "The previously seen {basilar} atelectasis/DA@L has resolved .",
    ),
    "atelectasis_plate.uncertain": (
        "Possible {basilar} atelectasis/U#t@L .",
        "Minimal/U>t {basilar} atelectasis/U#t@L cannot be excluded .",
    ),
    # ---- atelectasis, lobar collapse: {lobe} {lobe_adj}
    "atelectasis_lobar.present": (
        "{lobe_adj} collapse/DP#t@L .",
        "Atelectasis/DP#t@L of {lobe} .",
        "{lobe_adj} atelectasis/DP#t@L .",
        "There is collapse/DP#t@L of {lobe} .",
    ),
    "atelectasis_lobar.new": (
        "New/DP>t {lobe_adj} collapse/DP#t@L .",
        "New/DP>t atelectasis/DP#t@L of {lobe} .",
    ),
    "atelectasis_lobar.unchanged": (
        "Persistent/DP>t {lobe_adj} collapse/DP#t@L .",
        "Unchanged/DP>t {lobe_adj} atelectasis/DP#t@L .",
    ),
    "atelectasis_lobar.resolved": (
        "Interval resolution of the {lobe_adj} collapse/DA@L .",
        "The {lobe_adj} collapse/DA@L has resolved .",
    ),
    # ---- edema: {sev}
    "edema.present": (
        "{sev}/DP>e pulmonary/A#u edema/DP#e@u .",
        "There is {sev}/DP>e pulmonary/A#u edema/DP#e@u .",
        "{sev}/DP>e interstitial/DP>e pulmonary/A#u edema/DP#e@u .",
    ),
    "edema.new": (
        "New/DP>e {sev}/DP>e pulmonary/A#u edema/DP#e@u .",
        "There is new/DP>e {sev}/DP>e pulmonary/A#u edema/DP#e@u .",
    ),
    "edema.unchanged": (
        "Unchanged/DP>e {sev}/DP>e pulmonary/A#u edema/DP#e@u .",
        "Persistent/DP>e {sev}/DP>e pulmonary/A#u edema/DP#e@u .",
    ),
    "edema.worse": (
        "Worsening/DP>e pulmonary/A#u edema/DP#e@u , now {sev}/DP>e .",
        "Increased/DP>e pulmonary/A#u edema/DP#e@u , now {sev}/DP>e .",
    ),
    "edema.better": (
        "Improving/DP>e pulmonary/A#u edema/DP#e@u , now {sev}/DP>e .",
        "Decreased/DP>e pulmonary/A#u edema/DP#e@u , now {sev}/DP>e .",
    ),
    "edema.resolved": (
        "Interval resolution of pulmonary/A#u edema/DA@u .",
        "The previously seen pulmonary/A#u edema/DA@u has resolved .",
    ),
    "edema.uncertain": (
        "Possible mild/U>e pulmonary/A#u edema/U#e@u .",
        "Mild/U>e pulmonary/A#u edema/U#e@u cannot be excluded .",
    ),
    # ---- lung lesion: {cm} {lesion} {lobe} {lobe_adj}
    "lesion.present": (
        "A {cm}_cm/DP>l {lesion}/DP#l@L in {lobe} .",
        "There is a {cm}_cm/DP>l {lesion}/DP#l@L in {lobe} .",
        "{lobe_adj} {lesion}/DP#l@L measuring {cm}_cm/DP>l .",
    ),
    "lesion.new": (
        "New/DP>l {cm}_cm/DP>l {lesion}/DP#l@L in {lobe} .",
        "There is a new/DP>l {cm}_cm/DP>l {lesion}/DP#l@L in {lobe} .",
    ),
    "lesion.unchanged": (
        "Unchanged/DP>l {cm}_cm/DP>l {lesion}/DP#l@L in {lobe} .",
        "The {cm}_cm/DP>l {lobe_adj} {lesion}/DP#l@L is unchanged/DP>l .",
        "Stable/DP>l {lobe_adj} {lesion}/DP#l@L measuring {cm}_cm/DP>l .",
    ),
    "lesion.worse": (
        "The {lobe_adj} {lesion}/DP#l@L has increased/DP>l in size , now measuring {cm}_cm/DP>l .",
        "Increased/DP>l size of the {lobe_adj} {lesion}/DP#l@L , now {cm}_cm/DP>l .",
    ),
    "lesion.uncertain": (
        "Possible {cm}_cm/U>l {lesion}/U#l@L in {lobe} .",
        "A {lesion}/U#l@L in {lobe} cannot be excluded .",
    ),
    # ---- rib fracture: {side} {ribs} {fractures} {be} {is_are} {rib}
    "fracture.present": (
        "Acute/DP>f {fractures}/DP#f@r of the {side}/A>r lateral/A>r {ribs} .",
        "There {be} displaced/DP>f {fractures}/DP#f@r of the {side}/A>r lateral/A>r {ribs} .",
        "Displaced/DP>f {side}/A>r lateral/A>r {ribs} {fractures}/DP#f@r {is_are} seen .",
    ),
    "fracture.new": (
        "New/DP>f {fractures}/DP#f@r of the {side}/A>r lateral/A>r {ribs} .",
        "There {be} new/DP>f displaced/DP>f {fractures}/DP#f@r of the {side}/A>r lateral/A>r {ribs} .",
    ),
    "fracture.unchanged": (
        "Healing/DP>f {fractures}/DP#f@r of the {side}/A>r lateral/A>r {ribs} .",
        "Unchanged/DP>f healing/DP>f {side}/A>r lateral/A>r {ribs} {fractures}/DP#f@r .",
    ),
    "fracture.uncertain": (
        "Possible nondisplaced/U>f fracture/U#f@r of the {side}/A>r lateral/A>r {rib} .",
        "A nondisplaced/U>f fracture/U#f@r of the {side}/A>r lateral/A>r {rib} cannot be excluded .",
    ),
    # ---- pleural thickening (Pleural Other): {where} "right apical" | "biapical"
    "thickening.present": (
        "{where} pleural/A#p thickening/DP#k@p .",
        "There is {where} pleural/A#p thickening/DP#k@p .",
        "{where} pleural/A#p thickening/DP#k@p is noted .",
    ),
    "thickening.new": (
        "New/DP>k {where} pleural/A#p thickening/DP#k@p .",
    ),
    "thickening.unchanged": (
        "Stable/DP>k {where} pleural/A#p thickening/DP#k@p .",
        "Unchanged/DP>k {where} pleural/A#p thickening/DP#k@p .",
    ),
    # ---- support devices
    "et_tube.present": (
        "An endotracheal/DP>t tube/DP#t terminates {cm}_cm above the carina/A .",
        "Endotracheal/DP>t tube/DP#t tip is {cm}_cm above the carina/A .",
        "An endotracheal/DP>t tube/DP#t is in standard position .",
    ),
    "et_tube.unchanged": (
        "The endotracheal/DP>t tube/DP#t is unchanged/DP>t in position .",
        "Endotracheal/DP>t tube/DP#t remains in standard position .",
        "The endotracheal/DP>t tube/DP#t terminates {cm}_cm above the carina/A .",
    ),
    "ng_tube.present": (
        "An {ng}/DP>t tube/DP#t courses below the diaphragm/A into the stomach/A#s .",
        "The {ng}/DP>t tube/DP#t@s terminates in the stomach/A#s .",
        "{ng}/DP>t tube/DP#t@s tip is in the stomach/A#s .",
    ),
    "ng_tube.unchanged": (
        "The {ng}/DP>t tube/DP#t is unchanged/DP>t in position .",
        "{ng}/DP>t tube/DP#t@s again terminates in the stomach/A#s .",
    ),
    "central_line.present": (
        "{a} {line_to_svc} terminates in the {svc} .",
        "{line_to_svc} tip is in the {svc} .",
        "{a} {line_to_svc} is in place with its tip in the {svc} .",
    ),
    "central_line.unchanged": (
        "The {line} is unchanged/DP>c in position .",
        "{line_to_svc} again terminates in the {svc} .",
    ),
    "pacemaker.present": (
        "Left/A>w chest/A>w wall/A#w pacemaker/DP#k@w with leads/DP#d@r@v in the right/A>r atrium/A#r and "
        "right/A>v ventricle/A#v .",
        "A dual-chamber/DP>k pacemaker/DP#k is in place with leads/DP#d@r@v in the right/A>r atrium/A#r and "
        "right/A>v ventricle/A#v .",
        "A left/A>w chest/A>w wall/A#w pacemaker/DP#k@w is present .",
    ),
    "pacemaker.unchanged": (
        "Unchanged/DP>k left/A>w chest/A>w wall/A#w pacemaker/DP#k@w .",
        "Pacemaker/DP>d leads/DP#d@r@v are unchanged in the right/A>r atrium/A#r and right/A>v ventricle/A#v .",
    ),
    "chest_tube.present": (
        "A {side}/A>c chest/A#c tube/DP#t@c is in place .",
        "There is a {side}/A>c chest/A#c tube/DP#t@c with its tip at the apex/A .",
        "Interval placement of a {side}/A>c chest/A#c tube/DP#t@c .",
    ),
    "chest_tube.unchanged": (
        "The {side}/A>c chest/A#c tube/DP#t@c is unchanged/DP>t in position .",
        "{side}/A>c chest/A#c tube/DP#t@c remains in place .",
    ),
}

_DEVICE_KEYS = ("et_tube", "ng_tube", "central_line", "pacemaker", "chest_tube")


ROUTINE_LABELS: dict[str, dict[str, int]] = {
    "lungs.clear_no_consolidation": {"Consolidation": 0},
    "heart.normal": {"Cardiomegaly": 0},
    "cardiomediastinal.normal": {"Enlarged Cardiomediastinum": 0},
    "heart_mediastinum.normal": {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0},
    "mediastinum.normal": {"Enlarged Cardiomediastinum": 0},
    "negate.effusion_pneumothorax": {"Pleural Effusion": 0, "Pneumothorax": 0},
    "negate.consolidation_effusion_pneumothorax": {"Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0},
    "negate.effusion": {"Pleural Effusion": 0},
    "negate.pneumothorax": {"Pneumothorax": 0},
    "negate.consolidation": {"Consolidation": 0},
    "negate.edema": {"Edema": 0},
    "negate.lesion": {"Lung Lesion": 0},
    "negate.fracture": {"Fracture": 0},
}
_FINDING_SUBJECTS = {**{k: v for k, v in OBSERVATION_OF.items() if k != "atelectasis"},
                     "atelectasis_plate": "Atelectasis", "atelectasis_lobar": "Atelectasis",
                     **{device: "Support Devices" for device in _DEVICE_KEYS}}


def _labels_of(key: str) -> dict[str, int]:
    """What a statement asserts: a finding statement by its status, a routine one from ROUTINE_LABELS."""
    subject, _, status = key.partition(".")
    if key in ROUTINE_LABELS or subject not in _FINDING_SUBJECTS:
        return ROUTINE_LABELS.get(key, {})
    value = 1 if status in POSITIVE_STATUSES else -1 if status == "uncertain" else 0
    labels = {_FINDING_SUBJECTS[subject]: value}
    if subject == "consolidation" and status != "resolved":
        labels["Pneumonia"] = -1
    return labels


# What each statement asserts about the CheXpert observations (1, 0 or -1); unnamed observations stay None.
STATEMENT_LABELS: dict[str, dict[str, int]] = {key: _labels_of(key) for key in PHRASES}

# The vocabulary a rule-based labeler needs to read these reports: the words that name each observation ...
MENTION_WORDS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("mediastinum", "mediastinal", "cardiomediastinal"),
    "Cardiomegaly": ("cardiomegaly", "heart size", "the heart"),
    "Lung Opacity": ("opacity", "opacities"),
    "Lung Lesion": ("nodule", "nodules", "mass", "masses"),
    "Edema": ("edema",),
    "Consolidation": ("consolidation",),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis", "collapse"),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("effusion", "effusions"),
    "Pleural Other": ("pleural thickening",),
    "Fracture": ("fracture", "fractures"),
    "Support Devices": ("tube", "catheter", "line", "pacemaker"),
}
# ... and the cues that make a sentence's mentions negative or uncertain (a sentence has at most one kind).
NEGATION_CUES = ("no", "without", "resolution of", "resolved", "normal", "within normal limits", "unremarkable")
UNCERTAINTY_CUES = ("possible", "may", "cannot be excluded", "likely", "concerning for", "suggestive of")

# --------------------------------------------------------------------------- slots

_SIZES = {1: "small", 2: "moderate", 3: "large"}
_SEVERITIES = {1: "mild", 2: "moderate", 3: "severe"}
_ADVERBS = {1: "mildly", 2: "moderately", 3: "severely"}
_ORDINALS = {3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh", 8: "eighth", 9: "ninth", 10: "tenth"}
_LOBES = {
    ("right", "upper"): ("the right/A>L upper/A>L lobe/A#L", "right/A>L upper/A>L lobe/A#L"),
    ("right", "mid"): ("the right/A>L middle/A>L lobe/A#L", "right/A>L middle/A>L lobe/A#L"),
    ("right", "lower"): ("the right/A>L lower/A>L lobe/A#L", "right/A>L lower/A>L lobe/A#L"),
    ("left", "upper"): ("the left/A>L upper/A>L lobe/A#L", "left/A>L upper/A>L lobe/A#L"),
    ("left", "mid"): ("the lingula/A#L", "lingular/A#L"),
    ("left", "lower"): ("the left/A>L lower/A>L lobe/A#L", "left/A>L lower/A>L lobe/A#L"),
}
_ZONES = {"upper": "upper/A>L lung/A#L", "mid": "mid/A>L lung/A#L", "lower": "lung/A>L base/A#L"}
_SVC = ("superior/A>v vena/A>v cava/A#v", "cavoatrial/A>v junction/A#v", "mid/A>v SVC/A#v")
# Central lines end with the catheter entity, so "@v" appended locates it at the {svc} fragment.
_LINES = {
    "jugular": "right/A>j internal/A>j jugular/A#j central/DP>c venous/DP>c catheter/DP#c@j",
    "subclavian": "left/A>j subclavian/A#j central/DP>c venous/DP>c catheter/DP#c@j",
    "picc": "right/A#j PICC/DP>c line/DP#c@j",
}


def template_slots(finding: Finding, rng: np.random.Generator) -> dict[str, str]:
    """Words and markup fragments that fill a finding's templates."""
    plural = finding.side == "bilateral"
    slots = {
        "side": finding.side or "",
        "size": _SIZES[finding.grade],
        "sev": _SEVERITIES[finding.grade],
        "sevly": _ADVERBS[finding.grade],
        "be": "are" if plural else "is a",
        "is_are": "are" if plural else "is",
        "has": "have" if plural else "has",
        "a": "" if plural else "a",
        "effusion": "effusions" if plural else "effusion",
        "opacity": "opacities" if plural else "opacity",
        "angle": "angles" if plural else "angle",
        "pneumonia": str(rng.choice(PNEUMONIA_PHRASES)),
    }
    if finding.zone and finding.side in ("right", "left"):
        slots["lobe"], slots["lobe_adj"] = _LOBES[(finding.side, finding.zone)]
    if finding.kind in ("opacity", "atelectasis"):
        if plural:
            slots["zone"] = slots["base"] = "both/A>L lung/A>L bases/A#L"
            slots["basilar"] = "bibasilar/A#L"
        else:
            slots["zone"] = f"the {finding.side}/A>L {_ZONES[finding.zone or 'lower']}"
            slots["base"] = f"the {finding.side}/A>L lung/A>L base/A#L"
            slots["basilar"] = f"{finding.side}/A>L basilar/A#L"
    if finding.kind == "lesion":
        slots["cm"], slots["lesion"] = str(finding.measure_cm), str(finding.variant)
    if finding.kind == "fracture":
        ribs = [_ORDINALS[r] for r in finding.ribs]
        slots["ribs"] = {1: "{0}/A>r rib/A#r", 2: "{0}/A>r and {1}/A>r ribs/A#r",
                         3: "{0}/A>r through {2}/A>r ribs/A#r"}[len(ribs)].format(*ribs)
        slots["rib"] = f"{ribs[0]}/A>r rib/A#r"
        slots["fractures"] = "fractures" if len(ribs) > 1 else "fracture"
        slots["be"] = "are" if len(ribs) > 1 else "is a"
        slots["is_are"] = "are" if len(ribs) > 1 else "is"
    if finding.kind == "thickening":
        slots["where"] = "biapical/A>p" if plural else f"{finding.side}/A>p apical/A>p"
    if finding.kind == "device":
        slots["cm"] = str(finding.measure_cm or 4)
        slots["ng"] = str(rng.choice(["nasogastric", "enteric", "orogastric"]))
        slots["a"] = "an" if finding.variant == "ng_tube" else "a"
        if finding.variant == "central_line":
            slots["line"] = _LINES[finding.route or "jugular"]
            slots["line_to_svc"], slots["svc"] = slots["line"] + "@v", str(rng.choice(_SVC))
    return slots


# --------------------------------------------------------------------------- composing a report

_SECTION_OF = {"device": "devices", "cardiomegaly": "heart", "mediastinum": "heart", "consolidation": "lungs",
               "opacity": "lungs", "atelectasis": "lungs", "edema": "lungs", "lesion": "lungs",
               "effusion": "pleura", "pneumothorax": "pleura", "thickening": "pleura", "fracture": "bones"}
_ORDERS = (
    ("devices", "lungs", "pleura", "heart", "bones"),
    ("devices", "heart", "lungs", "pleura", "bones"),
    ("heart", "lungs", "pleura", "devices", "bones"),
    ("devices", "lungs", "heart", "pleura", "bones"),
)
_ORDER_WEIGHTS = (0.35, 0.35, 0.15, 0.15)
_KIND_ORDER = tuple(OBSERVATION_OF)
_IMPRESSION_ORDER = ("pneumothorax", "effusion", "consolidation", "edema", "lesion", "cardiomegaly", "mediastinum",
                     "atelectasis", "opacity", "fracture", "thickening")
_NORMAL_IMPRESSIONS = ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
                       "No acute intrathoracic process.")
MIN_WORDS, MAX_WORDS = 25, 70


@dataclass
class _Statement:
    key: str
    section: str
    parsed: Parsed
    optional: bool
    kind: str | None = None
    status: str | None = None
    templates: tuple[str, ...] = ()
    slots: dict[str, str] | None = None

    @property
    def words(self) -> int:
        return sum(1 for t in self.parsed.tokens if t[0].isalnum())


@dataclass(frozen=True)
class Report:
    findings: str
    impression: str
    labels: dict[str, int | None]
    radgraph: dict[str, Any]


def statement_key(finding: Finding, status: str) -> str:
    if finding.kind == "device":
        return f"{finding.variant}.{'unchanged' if status == 'unchanged' else 'present'}"
    subject = f"atelectasis_{finding.variant}" if finding.kind == "atelectasis" else finding.kind
    if finding.kind == "fracture" and status in ("worse", "better"):
        status = "unchanged"
    return f"{subject}.{status}"


def interval_status(finding: Finding, prior: StudyPlan | None) -> str:
    """How a present finding compares with the patient's previous study."""
    if finding.uncertain:
        return "uncertain"
    before = prior.get(finding.key) if prior else None
    if prior is None:
        return "present"
    if before is None or before.uncertain:
        return "new"
    if finding.kind == "fracture" or finding.grade == before.grade:
        return "unchanged"
    return "worse" if finding.grade > before.grade else "better"


def write_report(plan: StudyPlan, prior: StudyPlan | None, rng: np.random.Generator) -> Report:
    """FINDINGS, IMPRESSION, labels and RadGraph annotation of one study, worded relative to ``prior``."""
    statements: list[_Statement] = []

    def add(key: str, section: str, optional: bool, finding: Finding | None = None, status: str | None = None,
            extra: dict[str, str] | None = None) -> None:
        slots = {**(template_slots(finding, rng) if finding else {}), **(extra or {})}
        templates = PHRASES[key]
        parsed = parse(str(rng.choice(templates)), slots)
        statements.append(_Statement(key, section, parsed, optional, finding.kind if finding else None, status,
                                     templates, slots))

    present = {f.kind for f in plan.findings}
    resolved = []
    for finding in sorted(plan.findings, key=lambda f: _KIND_ORDER.index(f.kind)):
        status = interval_status(finding, prior)
        add(statement_key(finding, status), _SECTION_OF[finding.kind], False, finding, status)
    if prior is not None:
        for before in prior.findings:
            if before.kind != "device" and not before.uncertain and plan.get(before.key) is None and \
                    statement_key(before, "resolved") in PHRASES:
                resolved.append(before.kind)
                add(statement_key(before, "resolved"), _SECTION_OF[before.kind], False, before, "resolved")
    said = present | set(resolved)
    _add_routine(add, said, present, plan, prior, rng)
    _fit_length(statements, add, said, prior)
    ordered = _order(statements, rng)
    return _assemble(ordered, rng)


def _add_routine(add, said: set[str], present: set[str], plan: StudyPlan, prior: StudyPlan | None,
                 rng: np.random.Generator) -> None:
    """Normal-organ statements and routine negations for what the report has not already talked about."""
    chance = rng.random
    if prior is not None and chance() < 0.2:
        add("comparison", "opener", True)
    card, wide = "cardiomegaly" in present, "mediastinum" in present
    if not card and not wide:
        key = str(rng.choice(["heart_mediastinum.normal", "heart.normal", "cardiomediastinal.normal", "both"],
                             p=[0.35, 0.25, 0.3, 0.1]))
        if key == "both":
            add("heart.normal", "heart", False)
            add("mediastinum.normal", "heart", True)
        else:
            add(key, "heart", False)
    elif card and not wide and chance() < 0.4:
        add("mediastinum.normal", "heart", True)
    elif wide and not card and chance() < 0.5:
        add("heart.normal", "heart", True)
    parenchymal = present & {"consolidation", "opacity", "atelectasis", "edema", "lesion"}
    consolidation_said = "consolidation" in said
    if not parenchymal and "pneumothorax" not in present:
        if not consolidation_said and chance() < 0.25:
            add("lungs.clear_no_consolidation", "lungs", False)
            consolidation_said = True
        else:
            add("lungs.clear", "lungs", False)
    else:
        sides = {f.side for f in plan.findings if f.kind in parenchymal | {"pneumothorax", "effusion"}}
        if len(sides) == 1 and sides <= {"right", "left"} and "edema" not in parenchymal and chance() < 0.5:
            add("lung.other_clear", "lungs", True, extra={"other": "left" if sides == {"right"} else "right"})
    no_effusion, no_pneumothorax = "effusion" not in said, "pneumothorax" not in said
    if no_effusion and no_pneumothorax and chance() < 0.85:
        if not consolidation_said and chance() < 0.3:
            add("negate.consolidation_effusion_pneumothorax", "pleura", True)
            consolidation_said = True
        else:
            add("negate.effusion_pneumothorax", "pleura", True)
    elif no_effusion and not no_pneumothorax and chance() < 0.6:
        add("negate.effusion", "pleura", True)
    elif no_pneumothorax and not no_effusion and chance() < 0.7:
        add("negate.pneumothorax", "pleura", True)
    if not consolidation_said and chance() < 0.3:
        add("negate.consolidation", "lungs", True)
    if "edema" not in said and chance() < 0.15:
        add("negate.edema", "lungs", True)
    if "lesion" not in said and chance() < 0.05:
        add("negate.lesion", "lungs", True)
    if "fracture" not in said:
        if chance() < 0.75:
            add("bones.normal", "bones", True)
        elif chance() < 0.4:
            add("negate.fracture", "bones", True)
    if prior is not None and chance() < 0.4 and not (set(f.kind for f in prior.findings) ^ present) and \
            all(interval_status(f, prior) == "unchanged" for f in plan.findings):
        add("no_change", "closer", True)


def _fit_length(statements: list[_Statement], add, said: set[str], prior: StudyPlan | None) -> None:
    """Pad short reports with routine statements and trim long ones, to MIN_WORDS..MAX_WORDS words."""
    keys = {s.key for s in statements}
    negated = {o for s in statements for o, v in STATEMENT_LABELS[s.key].items() if v == 0}
    padding = [
        ("negate.consolidation", "lungs", "Consolidation"),
        ("bones.normal", "bones", None),
        ("negate.edema", "lungs", "Edema"),
        ("negate.pneumothorax", "pleura", "Pneumothorax"),
        ("negate.effusion", "pleura", "Pleural Effusion"),
        ("negate.lesion", "lungs", "Lung Lesion"),
        ("mediastinum.normal", "heart", "Enlarged Cardiomediastinum"),
        ("heart.normal", "heart", "Cardiomegaly"),
        ("negate.fracture", "bones", "Fracture"),
        ("comparison", "opener", None),
    ]
    kinds_of = {"Consolidation": "consolidation", "Edema": "edema", "Pneumothorax": "pneumothorax",
                "Pleural Effusion": "effusion", "Lung Lesion": "lesion", "Enlarged Cardiomediastinum": "mediastinum",
                "Cardiomegaly": "cardiomegaly", "Fracture": "fracture"}
    for key, section, observation in padding:
        if sum(s.words for s in statements) >= MIN_WORDS:
            break
        if key in keys or (observation and (observation in negated or kinds_of[observation] in said)):
            continue
        if key == "bones.normal" and "fracture" in said or key == "comparison" and prior is None:
            continue
        add(key, section, True)
        keys.add(key)
    drop_order = ("comparison", "no_change", "negate.lesion", "negate.edema", "negate.fracture", "lung.other_clear",
                  "bones.normal", "negate.consolidation", "mediastinum.normal", "heart.normal")
    for key in drop_order:
        if sum(s.words for s in statements) <= MAX_WORDS:
            return
        statements[:] = [s for s in statements if not (s.optional and s.key == key)]
    for statement in sorted(statements, key=lambda s: -s.words):
        if sum(s.words for s in statements) <= MAX_WORDS:
            return
        shortest = min((parse(t, statement.slots) for t in statement.templates),
                       key=lambda p: sum(1 for t in p.tokens if t[0].isalnum()))
        statement.parsed = shortest


def _order(statements: list[_Statement], rng: np.random.Generator) -> list[_Statement]:
    """Sections in one of a few common orders; findings before normal statements within a section."""
    order = ("opener",) + _ORDERS[int(rng.choice(len(_ORDERS), p=_ORDER_WEIGHTS))] + ("closer",)
    ordered = []
    for section in order:
        members = [s for s in statements if s.section == section]
        findings = [s for s in members if s.kind is not None]
        if len(findings) > 1 and rng.random() < 0.3:
            findings = [findings[i] for i in rng.permutation(len(findings))]
        ordered += findings + [s for s in members if s.kind is None]
    return ordered


def _assemble(statements: list[_Statement], rng: np.random.Generator) -> Report:
    tokens: list[str] = []
    entities: dict[str, dict[str, Any]] = {}
    merged: dict[str, int] = {}
    for statement in statements:
        offset = len(tokens)
        tokens.extend(statement.parsed.tokens)
        ids = {}
        first_id = len(entities) + 1
        for k, mention in enumerate(statement.parsed.mentions):
            if mention.name:
                ids[mention.name] = str(first_id + k)
        for k, mention in enumerate(statement.parsed.mentions):
            entities[str(first_id + k)] = {
                "tokens": " ".join(tokens[offset + mention.start: offset + mention.end + 1]),
                "label": mention.label,
                "start_ix": offset + mention.start,
                "end_ix": offset + mention.end,
                "relations": [[relation, ids[target]] for relation, target in mention.relations],
            }
        for observation, value in STATEMENT_LABELS[statement.key].items():
            merged[observation] = _stronger(merged.get(observation), value)
    labels: dict[str, int | None] = {o: merged.get(o) for o in OBSERVATIONS}
    labels["No Finding"] = None if any(
        v in (1, -1) for o, v in labels.items() if o not in ("No Finding", "Support Devices")) else 1
    return Report(detokenize(tokens), _impression(statements, rng), labels,
                  {"text": " ".join(tokens), "entities": entities})


def _stronger(old: int | None, new: int) -> int:
    """CheXpert's aggregation of several mentions of one observation: positive, then uncertain, then negative."""
    rank = {1: 2, -1: 1, 0: 0}
    return new if old is None or rank[new] > rank[old] else old


def _impression(statements: list[_Statement], rng: np.random.Generator) -> str:
    """The weightiest findings' first sentences, or a normal impression."""
    ranked = sorted((s for s in statements if s.kind in _IMPRESSION_ORDER and s.status != "resolved"),
                    key=lambda s: _IMPRESSION_ORDER.index(s.kind))
    lines = [detokenize(sentences(s.parsed.tokens)[0]) for s in ranked[:3]]
    return " ".join(lines) if lines else str(rng.choice(_NORMAL_IMPRESSIONS))
