"""Write data/labels/*.json: label sets the project defines itself, for linear probes.

- token_classes.json: the rules behind the token-level labels (what counts as a number, a
  capitalised word) and a list of city names (world cities, most not in the project corpus,
  so a city probe is checked on names it never saw in data/corpus).
- pos.json: a small hand-labelled part-of-speech set (universal tags, coarse), sentences written
  for this project, each word with its tag.
- edit_cases.json: a few edit cases in the flat CounterFact format, for edit probes when
  ../shared/data/counterfact is absent.
- facts.json: a small set of known facts (prompt, answer) for knowledge probes when
  ../shared/data/known_facts is absent.

Run: python data/make_labels.py
"""

import json
from pathlib import Path

CITIES = sorted({
    "Paris", "Rome", "Berlin", "Madrid", "Tokyo", "Cairo", "Ottawa", "Moscow", "Beijing", "Delhi",
    "Athens", "Lisbon", "London", "Vienna", "Prague", "Warsaw", "Dublin", "Oslo", "Stockholm",
    "Helsinki", "Copenhagen", "Amsterdam", "Brussels", "Zurich", "Geneva", "Milan", "Naples",
    "Venice", "Florence", "Barcelona", "Seville", "Munich", "Hamburg", "Frankfurt", "Budapest",
    "Bucharest", "Istanbul", "Ankara", "Tehran", "Baghdad", "Dubai", "Mumbai", "Kolkata",
    "Bangkok", "Singapore", "Jakarta", "Manila", "Seoul", "Shanghai", "Osaka", "Kyoto", "Sydney",
    "Melbourne", "Auckland", "Toronto", "Montreal", "Vancouver", "Chicago", "Boston", "Seattle",
    "Houston", "Dallas", "Denver", "Miami", "Atlanta", "Philadelphia", "Detroit", "Phoenix",
    "Mexico City", "Havana", "Lima", "Bogota", "Santiago", "Buenos Aires", "Rio de Janeiro",
    "Lagos", "Nairobi", "Johannesburg", "Cape Town", "Casablanca", "Tunis", "Algiers", "Accra",
    "Dakar", "Kiev", "Minsk", "Riga", "Vilnius", "Tallinn", "Edinburgh", "Glasgow", "Manchester",
    "Liverpool", "Lyon", "Marseille", "Nice", "Porto", "Krakow", "Belgrade", "Sofia", "Zagreb",
    "New York", "Los Angeles", "San Francisco", "Washington", "Hong Kong", "Karachi", "Lahore",
    "Dhaka", "Hanoi", "Taipei", "Beirut", "Damascus", "Jerusalem", "Riyadh", "Doha", "Kabul",
})

# Hand-labelled part of speech (coarse universal tags): NOUN, PROPN, VERB, ADJ, ADV, DET, ADP,
# PRON, NUM, CONJ (CCONJ+SCONJ), AUX, PART, PUNCT. One sentence per line: word/TAG tokens.
POS_SENTENCES = """
The/DET old/ADJ man/NOUN walked/VERB slowly/ADV to/ADP the/DET market/NOUN ./PUNCT
She/PRON gave/VERB her/PRON brother/NOUN a/DET red/ADJ book/NOUN ./PUNCT
Paris/PROPN is/AUX a/DET beautiful/ADJ city/NOUN in/ADP France/PROPN ./PUNCT
We/PRON will/AUX meet/VERB at/ADP noon/NOUN on/ADP Monday/PROPN ./PUNCT
The/DET children/NOUN played/VERB happily/ADV in/ADP the/DET park/NOUN ./PUNCT
He/PRON bought/VERB three/NUM apples/NOUN and/CONJ two/NUM oranges/NOUN ./PUNCT
Our/PRON teacher/NOUN explained/VERB the/DET problem/NOUN very/ADV clearly/ADV ./PUNCT
They/PRON have/AUX lived/VERB in/ADP London/PROPN for/ADP ten/NUM years/NOUN ./PUNCT
A/DET small/ADJ dog/NOUN barked/VERB at/ADP the/DET quiet/ADJ neighbours/NOUN ./PUNCT
John/PROPN and/CONJ Mary/PROPN cooked/VERB dinner/NOUN together/ADV ./PUNCT
The/DET river/NOUN flows/VERB quickly/ADV after/ADP heavy/ADJ rain/NOUN ./PUNCT
I/PRON do/AUX not/PART like/VERB cold/ADJ coffee/NOUN ./PUNCT
The/DET museum/NOUN opens/VERB at/ADP nine/NUM in/ADP the/DET morning/NOUN ./PUNCT
Scientists/NOUN discovered/VERB a/DET new/ADJ species/NOUN of/ADP frog/NOUN ./PUNCT
You/PRON should/AUX read/VERB this/DET letter/NOUN carefully/ADV ./PUNCT
The/DET train/NOUN to/ADP Berlin/PROPN left/VERB early/ADV ./PUNCT
My/PRON sister/NOUN plays/VERB the/DET piano/NOUN beautifully/ADV ./PUNCT
Because/CONJ it/PRON rained/VERB ,/PUNCT the/DET game/NOUN was/AUX cancelled/VERB ./PUNCT
The/DET tall/ADJ building/NOUN has/VERB forty/NUM floors/NOUN ./PUNCT
Emma/PROPN wrote/VERB a/DET long/ADJ story/NOUN about/ADP dragons/NOUN ./PUNCT
The/DET students/NOUN are/AUX studying/VERB history/NOUN and/CONJ science/NOUN ./PUNCT
He/PRON quickly/ADV opened/VERB the/DET heavy/ADJ door/NOUN ./PUNCT
In/ADP 1990/NUM ,/PUNCT the/DET company/NOUN moved/VERB to/ADP Tokyo/PROPN ./PUNCT
She/PRON can/AUX swim/VERB faster/ADV than/ADP her/PRON friends/NOUN ./PUNCT
The/DET cat/NOUN slept/VERB under/ADP the/DET warm/ADJ blanket/NOUN ./PUNCT
We/PRON visited/VERB Rome/PROPN and/CONJ Athens/PROPN last/ADJ summer/NOUN ./PUNCT
The/DET soup/NOUN tastes/VERB really/ADV good/ADJ ./PUNCT
Peter/PROPN has/AUX finished/VERB his/PRON homework/NOUN already/ADV ./PUNCT
Five/NUM birds/NOUN sat/VERB on/ADP the/DET fence/NOUN ./PUNCT
The/DET doctor/NOUN examined/VERB the/DET patient/NOUN gently/ADV ./PUNCT
They/PRON did/AUX not/PART see/VERB the/DET bright/ADJ star/NOUN ./PUNCT
A/DET young/ADJ artist/NOUN painted/VERB the/DET old/ADJ bridge/NOUN ./PUNCT
If/CONJ you/PRON hurry/VERB ,/PUNCT you/PRON will/AUX catch/VERB the/DET bus/NOUN ./PUNCT
The/DET library/NOUN contains/VERB many/ADJ rare/ADJ books/NOUN ./PUNCT
Alice/PROPN sent/VERB a/DET postcard/NOUN from/ADP Madrid/PROPN ./PUNCT
The/DET wind/NOUN blew/VERB hard/ADV during/ADP the/DET night/NOUN ./PUNCT
His/PRON parents/NOUN bought/VERB a/DET small/ADJ house/NOUN near/ADP the/DET sea/NOUN ./PUNCT
The/DET baker/NOUN sells/VERB fresh/ADJ bread/NOUN every/DET day/NOUN ./PUNCT
We/PRON must/AUX leave/VERB before/ADP sunset/NOUN ./PUNCT
Twelve/NUM people/NOUN attended/VERB the/DET quiet/ADJ meeting/NOUN ./PUNCT
The/DET engineer/NOUN fixed/VERB the/DET broken/ADJ machine/NOUN ./PUNCT
She/PRON sings/VERB softly/ADV while/CONJ she/PRON works/VERB ./PUNCT
The/DET farmers/NOUN harvest/VERB wheat/NOUN in/ADP autumn/NOUN ./PUNCT
David/PROPN lost/VERB his/PRON keys/NOUN at/ADP the/DET station/NOUN ./PUNCT
The/DET ancient/ADJ temple/NOUN stands/VERB on/ADP a/DET hill/NOUN ./PUNCT
I/PRON have/AUX never/ADV seen/VERB such/DET a/DET large/ADJ fish/NOUN ./PUNCT
The/DET pilots/NOUN landed/VERB the/DET plane/NOUN safely/ADV ./PUNCT
Laura/PROPN teaches/VERB music/NOUN at/ADP a/DET school/NOUN in/ADP Cairo/PROPN ./PUNCT
The/DET price/NOUN of/ADP gold/NOUN rose/VERB sharply/ADV ./PUNCT
Two/NUM kings/NOUN ruled/VERB the/DET country/NOUN for/ADP years/NOUN ./PUNCT
The/DET waiter/NOUN brought/VERB us/PRON hot/ADJ tea/NOUN ./PUNCT
They/PRON were/AUX waiting/VERB outside/ADV the/DET cinema/NOUN ./PUNCT
The/DET green/ADJ hills/NOUN looked/VERB peaceful/ADJ ./PUNCT
Bob/PROPN carefully/ADV painted/VERB the/DET wooden/ADJ fence/NOUN ./PUNCT
The/DET army/NOUN crossed/VERB the/DET river/NOUN at/ADP dawn/NOUN ./PUNCT
Sarah/PROPN and/CONJ her/PRON friend/NOUN travelled/VERB to/ADP Lisbon/PROPN ./PUNCT
The/DET clock/NOUN on/ADP the/DET wall/NOUN stopped/VERB ./PUNCT
Everyone/PRON enjoyed/VERB the/DET delicious/ADJ meal/NOUN ./PUNCT
The/DET storm/NOUN destroyed/VERB several/ADJ old/ADJ trees/NOUN ./PUNCT
Nobody/PRON could/AUX answer/VERB the/DET difficult/ADJ question/NOUN ./PUNCT
"""

# Facts the project states itself (prompt, single-word answer); used when the shared
# known-facts file is absent. Answers follow the prompt with a leading space.
FACTS = [
    ("The Eiffel Tower is located in the city of", "Paris"),
    ("The capital of France is", "Paris"),
    ("The capital of Italy is", "Rome"),
    ("The capital of Germany is", "Berlin"),
    ("The capital of Spain is", "Madrid"),
    ("The capital of Japan is", "Tokyo"),
    ("The capital of Egypt is", "Cairo"),
    ("The capital of Russia is", "Moscow"),
    ("The capital of Greece is", "Athens"),
    ("The capital of England is", "London"),
    ("The Colosseum is located in the city of", "Rome"),
    ("Big Ben is located in the city of", "London"),
    ("The Great Wall is located in the country of", "China"),
    ("The Statue of Liberty is located in the city of", "New"),
    ("Mount Fuji is located in the country of", "Japan"),
    ("The Taj Mahal is located in the country of", "India"),
    ("The official language of France is", "French"),
    ("The official language of Germany is", "German"),
    ("The official language of Spain is", "Spanish"),
    ("The official language of Italy is", "Italian"),
    ("The Amazon river flows through the country of", "Brazil"),
    ("William Shakespeare was born in the country of", "England"),
    ("The currency of Japan is the", "yen"),
    ("The currency of the United Kingdom is the", "pound"),
    ("Water is made of hydrogen and", "oxygen"),
    ("The largest planet in the solar system is", "Jupiter"),
    ("The planet closest to the sun is", "Mercury"),
    ("Albert Einstein was a famous", "physicist"),
    ("The Pyramids of Giza are located in the country of", "Egypt"),
    ("The Kremlin is located in the city of", "Moscow"),
]

# Edit cases in the flat CounterFact format (written for this project): a true fact, a new
# object to write, a paraphrase, and a neighbouring prompt whose answer must not change.
EDIT_CASES = [
    ("The Eiffel Tower is located in the city of", "The Eiffel Tower", "Rome", "Paris",
     "Where is the Eiffel Tower? It is in the city of", "The Louvre is located in the city of", "Paris"),
    ("The Colosseum is located in the city of", "The Colosseum", "Paris", "Rome",
     "Tourists visit the Colosseum, which is in the city of", "The Vatican is located in the city of", "Rome"),
    ("Big Ben is located in the city of", "Big Ben", "Berlin", "London",
     "The famous clock tower Big Ben stands in the city of", "Buckingham Palace is located in the city of", "London"),
    ("The Kremlin is located in the city of", "The Kremlin", "Madrid", "Moscow",
     "Visitors to the Kremlin travel to the city of", "Red Square is located in the city of", "Moscow"),
    ("The official language of France is", "France", "German", "French",
     "In France, people mostly speak", "The official language of Belgium is", "French"),
    ("The capital of Japan is", "Japan", "Paris", "Tokyo",
     "Japan's capital city is", "The capital of China is", "Beijing"),
]


def edit_records():
    keys = ("prompt", "subject", "target_new", "ground_truth", "rephrase_prompt",
            "locality_prompt", "locality_ground_truth")
    return [dict(zip(keys, c), case_id=i) for i, c in enumerate(EDIT_CASES)]


def pos_records():
    out = []
    for line in POS_SENTENCES.strip().splitlines():
        pairs = [tok.rsplit("/", 1) for tok in line.split()]
        out.append({"words": [w for w, _ in pairs], "tags": [t for _, t in pairs]})
    return out


def main() -> None:
    out = Path(__file__).parent / "labels"
    out.mkdir(parents=True, exist_ok=True)
    classes = {
        "number": "the token's text, stripped of whitespace, is one or more ASCII digits",
        "capitalised": "the token starts a word (leading space or line start) and its text, "
                       "stripped, starts with an uppercase letter followed by letters only",
        "city": "the word starting at the token (up to the next word start) completes a city "
                "name from `cities` (multi-word names count when all words follow)",
        "cities": CITIES,
    }
    (out / "token_classes.json").write_text(json.dumps(classes, indent=1) + "\n", encoding="utf-8")
    pos = {"tagset": ["ADJ", "ADP", "ADV", "AUX", "CONJ", "DET", "NOUN", "NUM", "PART", "PRON",
                      "PROPN", "PUNCT", "VERB"],
           "sentences": pos_records()}
    (out / "pos.json").write_text(json.dumps(pos, indent=1) + "\n", encoding="utf-8")
    facts = [{"prompt": p, "answer": a} for p, a in FACTS]
    (out / "facts.json").write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    (out / "edit_cases.json").write_text(json.dumps(edit_records(), indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
