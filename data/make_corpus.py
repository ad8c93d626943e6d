"""Write data/corpus/tiny_corpus.txt: a small English corpus the project generates itself.

Template sentences about places, people, numbers, time, and everyday actions, seeded, so the
file is reproducible. Used by tests and the demo when ../shared is absent.
Run: python data/make_corpus.py
"""

import random
from pathlib import Path

CITIES = {"France": "Paris", "Italy": "Rome", "Germany": "Berlin", "Spain": "Madrid",
          "Japan": "Tokyo", "Egypt": "Cairo", "Canada": "Ottawa", "Russia": "Moscow",
          "China": "Beijing", "India": "Delhi", "Greece": "Athens", "Portugal": "Lisbon"}
NAMES = ["Mary", "John", "Alice", "Bob", "Sarah", "David", "Emma", "James", "Laura", "Peter"]
THINGS = ["book", "letter", "drink", "ball", "key", "ticket", "gift", "map", "phone", "coat"]
VERBS = ["gave", "handed", "sent", "showed", "passed", "threw", "brought", "lent"]
PLACES = ["store", "park", "station", "library", "museum", "school", "market", "beach"]
ADJ = ["old", "small", "quiet", "busy", "famous", "beautiful", "large", "ancient"]
TOPICS = ["music", "history", "science", "football", "painting", "cooking", "chess", "poetry"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]


def sentences(rng: random.Random):
    country, city = rng.choice(list(CITIES.items()))
    a, b = rng.sample(NAMES, 2)
    yield f"The capital of {country} is {city}, a {rng.choice(ADJ)} city."
    yield f"When {a} and {b} went to the {rng.choice(PLACES)}, {b} {rng.choice(VERBS)} a {rng.choice(THINGS)} to {a}."
    y = rng.randint(1100, 1990)
    yield f"The war lasted from the year {y} to the year {y + rng.randint(2, 9)}."
    yield f"In {rng.choice(MONTHS)} {rng.randint(1950, 2020)}, {a} moved to {city} to study {rng.choice(TOPICS)}."
    n = rng.randint(2, 60)
    yield f"There are {n} {rng.choice(THINGS)}s in the {rng.choice(ADJ)} {rng.choice(PLACES)}, and {n + 1} people."
    yield f"{a} likes {rng.choice(TOPICS)}, but {b} prefers {rng.choice(TOPICS)}."
    yield f"The {rng.choice(ADJ)} {rng.choice(PLACES)} in {city} opens at {rng.randint(6, 11)} o'clock."


def main() -> None:
    rng = random.Random(0)
    lines = []
    while len(lines) < 3000:
        lines.extend(sentences(rng))
    out = Path(__file__).parent / "corpus" / "tiny_corpus.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
