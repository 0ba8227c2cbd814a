"""A small UK online retailer's customers, as several tools hold them (fictional people).

The same person appears in HubSpot, Shopify, Mailchimp, Klaviyo, Stripe and GA4 with the
variations real tools produce: different case, a nickname, a phone written nationally or in
E.164, an address typed twice. ``key`` is the ground truth: equal keys are the same person.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Person:
    key: str
    first_name: str
    last_name: str
    email: str
    # E.164, in Ofcom's range for drama (0113 496 0000-0999): valid numbers that ring nobody.
    # (Its mobile drama range, 07700 900xxx, is not a valid number for libphonenumber.)
    phone: str
    street: str
    city: str
    postcode: str
    company: str = ""


PEOPLE = (
    Person("p01", "Amelia", "Hughes", "amelia.hughes@btinternet.com",
           "+441134960101", "12 Elm Road", "Leeds", "LS6 2AB"),
    Person("p02", "Oliver", "Bennett", "oliver.bennett@mailbox.org",
           "+441134960102", "4 Mill Lane", "Bristol", "BS1 4DJ"),
    Person("p03", "Zoë", "Ó Briain", "zoe.obriain@eircom.net",
           "+441134960103", "77 Harbour Street", "Belfast", "BT1 3NQ"),
    Person("p04", "Mohammed", "Khan", "m.khan@fastmail.com",
           "+441134960104", "9 Station Approach", "Manchester", "M1 2PF", "Khan Logistics Ltd"),
    Person("p05", "Chloé", "Dubois", "chloe.dubois@orange.fr",
           "+441134960105", "21 Rue Street", "London", "SW1A 1AA"),
    Person("p06", "Harry", "Wilson", "harry.wilson@gmail.com",
           "+441134960106", "3 Castle Wynd", "Edinburgh", "EH1 2NG"),
    Person("p07", "Isla", "MacDonald", "isla.macdonald@btinternet.com",
           "+441134960107", "58 Glen Road", "Inverness", "IV2 3BS"),
    Person("p08", "Jack", "Thompson", "jack.t@outlook.com",
           "+441134960108", "10 Queen Street", "Cardiff", "CF10 2BH", "Thompson & Sons"),
    Person("p09", "Sophie", "Clarke", "sophie.clarke@yahoo.co.uk",
           "+441134960109", "1 Abbey Gardens", "Bath", "BA1 1LY"),
    Person("p10", "Noah", "Patel", "noah.patel@btinternet.com",
           "+441134960110", "45 High Street", "Leicester", "LE1 5YN"),
    Person("p11", "Grace", "O'Neill", "grace.oneill@gmail.com",
           "+441134960111", "6 Bridge End", "Derry", "BT48 6LA"),
    Person("p12", "Renée", "Müller", "renee.mueller@web.de",
           "+441134960112", "88 Kingsway", "London", "WC2B 6AA"),
)
