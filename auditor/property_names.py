"""The global image properties: measured per image by the sweep (`auditor.properties`), judged by the rule
`auditor.findings.property_shortcut`. Names only, so that both sides, and the report, read them without torch or
the rules' libraries."""

PIXEL_PROPERTIES = ("brightness", "contrast", "cast_rg", "cast_yb", "saturation", "sharpness", "greyscale")
FILE_PROPERTIES = ("size", "aspect")  # of the decoded file: gone once the image is resized, so never edited
PROPERTIES = PIXEL_PROPERTIES + FILE_PROPERTIES
COLUMN = "prop_"  # records column of a property: prop_<name>
