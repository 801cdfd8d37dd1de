"""Real texts for the merge gate and export verification: varied lengths, topics, punctuation,
an instruction-formatted query, digits and non-ASCII (written for this project)."""

PROBE_TEXTS: list[str] = [
    "The cat sat on the mat.",
    "short",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\n"
    "Query: how do pooling layers change sentence embeddings?",
    "Pooling and attention: what are effective designs for LLM-based embedding models?",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates by half "
    "a percentage point, the largest increase in more than two decades.",
    "A recipe: whisk two eggs with 150 g of flour, 300 ml of milk and a pinch of salt; rest the "
    "batter for 30 minutes, then fry thin pancakes in a hot, lightly oiled pan.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Café, naïve, coöperate — déjà vu.",
    "def add(a, b):\n    return a + b  # adds two numbers",
    "The 2024 study compares five pooling and attention designs on a 7B decoder, reporting "
    "STS, retrieval, classification and clustering scores with paired significance tests.",
    "Why is the sky blue?",
    "Rayleigh scattering makes shorter wavelengths scatter more strongly in the atmosphere, so "
    "blue light reaches the eye from every direction of the daytime sky; at sunset the light "
    "crosses more air and the reds and oranges dominate what is left. " * 2,
    "Call 555-0100 before 9:30 a.m. on 03/04/2025.",
    "¿Dónde está la biblioteca? 图书馆在哪里？",
    "An embedding maps text to a vector so that similar meanings lie close together.",
    "Terrible service, cold food, and a forty-minute wait. Would not return.",
]

# Activation ranges of the static int8 profile are calibrated on these, kept apart from
# PROBE_TEXTS so that verify judges the quantised graph on texts it was not calibrated on.
CALIBRATION_TEXTS: list[str] = [
    "The committee will meet again next Thursday to review the budget for the coming year.",
    "Instruct: Given a question, retrieve passages that answer it\nQuery: what causes tides?",
    "Tides rise and fall twice a day as the Moon's gravity pulls on the oceans.",
    "yes",
    "She opened the old wooden door and stepped into a garden full of roses and tall grass.",
    "Error 404: the requested page could not be found on this server.",
    "for i in range(10):\n    total += i * i",
    "The striker scored twice in the second half, and the home side won the league by a point.",
    "Mix the cement with water and sand in a ratio of one to three, then pour it before noon.",
    "Quarterly revenue rose 12 percent to $4.2 billion, beating analysts' forecasts.",
    "Le musée ouvre à dix heures; l'entrée est gratuite le premier dimanche du mois.",
    "A short poem: the river bends, the willow leans, and evening gathers in the reeds.",
    "Antibiotics do not work against viruses, so they will not cure a cold or the flu.",
    "Please remember to bring your passport, two photographs and the completed form.",
    "In 1804 the expedition set out up the Missouri River to find a route to the Pacific.",
    "The new phone has a larger screen, a faster chip and a battery that lasts two days.",
]
