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
    phone: str  # E.164
    street: str
    city: str
    postcode: str
    company: str = ""


PEOPLE = (
    Person("p01", "Amelia", "Hughes", "amelia.hughes@btinternet.com", "+447700900101", "12 Elm Road", "Leeds", "LS6 2AB"),
    Person("p02", "Oliver", "Bennett", "oliver.bennett@mailbox.org", "+447700900102", "4 Mill Lane", "Bristol", "BS1 4DJ"),
    Person("p03", "Zoë", "Ó Briain", "zoe.obriain@eircom.net", "+447700900103", "77 Harbour Street", "Belfast", "BT1 3NQ"),
    Person("p04", "Mohammed", "Khan", "m.khan@fastmail.com", "+447700900104", "9 Station Approach", "Manchester", "M1 2PF", "Khan Logistics Ltd"),
    Person("p05", "Chloé", "Dubois", "chloe.dubois@orange.fr", "+447700900105", "21 Rue Street", "London", "SW1A 1AA"),
    Person("p06", "Harry", "Wilson", "harry.wilson@gmail.com", "+447700900106", "3 Castle Wynd", "Edinburgh", "EH1 2NG"),
    Person("p07", "Isla", "MacDonald", "isla.macdonald@btinternet.com", "+447700900107", "58 Glen Road", "Inverness", "IV2 3BS"),
    Person("p08", "Jack", "Thompson", "jack.t@outlook.com", "+447700900108", "10 Queen Street", "Cardiff", "CF10 2BH", "Thompson & Sons"),
    Person("p09", "Sophie", "Clarke", "sophie.clarke@yahoo.co.uk", "+447700900109", "1 Abbey Gardens", "Bath", "BA1 1LY"),
    Person("p10", "Noah", "Patel", "noah.patel@btinternet.com", "+447700900110", "45 High Street", "Leicester", "LE1 5YN"),
    Person("p11", "Grace", "O'Neill", "grace.oneill@gmail.com", "+447700900111", "6 Bridge End", "Derry", "BT48 6LA"),
    Person("p12", "Renée", "Müller", "renee.mueller@web.de", "+447700900112", "88 Kingsway", "London", "WC2B 6AA"),
)
