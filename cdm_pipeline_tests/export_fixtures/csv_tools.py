"""Files shaped exactly like the CSV exports of HubSpot, Salesforce, Shopify and Stripe.

One writer per preset of cdm_pipeline/presets: ``write_<preset>(landing_dir, day)`` writes the
export(s) under the preset's default path with ``{date}`` = ``day`` and returns their paths.
The people are the shared fictional ones of people.py, with the variations real tools produce
(a nickname, national and spaced phone formats, an upper-case e-mail, accented names, a repeat buyer, a
partial refund, a voided order, a guest checkout without a phone). ``EXPECTED`` holds the facts
the tests check per preset.

Bytes are written as each tool writes them: byte-order mark, quoting, line ends and encoding.
Sources, per writer (the presets' ``documentation:`` lists cite the same pages):

HubSpot  https://knowledge.hubspot.com/import-and-export/export-records
         https://developers.hubspot.com/docs/api/crm/exports (labels, not internal values, by
         default; "Record ID" first)
         https://developers.hubspot.com/docs/faq/how-should-timestamps-be-formatted-for-hubspots-apis
         (times shown in the account's time zone)
         https://knowledge.hubspot.com/contacts/how-can-i-see-if-a-contact-opted-out-of-email-communication
         ("Unsubscribed from all email"); header labels as in a public "all contacts" export
         ("Record ID","First Name","Last Name",..."Create Date",..."Unsubscribed from all email").
         UTF-8 with BOM, all fields quoted, CRLF (HubSpot's documentation is silent on the bytes:
         this is the shape of files downloaded from the export e-mail).
Salesforce  https://help.salesforce.com/s/articleView?id=sf.reports_export.htm&type=5
         https://github.com/CodeForPhilly/paws-data-pipeline/blob/12a140a9361fa2aa8c27aea8f105831e40050e4c/src/server/file_uploader.py
         "Details only" CSV: every field quoted, ISO-8859-1 (the export dialog's default for
         English users), dates in the user's locale (dd/mm/yyyy for English (UK)). The line end
         is not documented: LF here.
Shopify  https://help.shopify.com/en/manual/fulfillment/managing-orders/exporting-orders
         https://help.shopify.com/en/manual/customers/import-export-customers
         https://help.shopify.com/en/manual/promoting-marketing/create-marketing/customer-emails/email-marketing-consent
         https://shopify.dev/docs/api/admin-graphql/latest/enums/OrderDisplayFinancialStatus
         https://github.com/jadwro/allegro_csv_parser/blob/a0a982795450f0156db702cb93fbdc3f8030be71/src/Shopify/types/ShopifyOrderTypeCSV.ts
         https://github.com/laplace-live/shopify-csv-converter/blob/1b334c910811ed75cd64feeedf545a2d45a38b0f/src/types/index.d.ts
         UTF-8 without BOM, quotes only where needed, LF. Orders: the full 79-column header;
         line-item rows repeat Name, Email, Created at and the line-item columns only.
         Customers: the 20-column export of the new customers page; Customer ID and phones
         carry the leading apostrophe Shopify writes to keep them text in Excel.
Stripe   https://support.stripe.com/questions/exporting-a-report-of-all-transactions
         https://docs.cello.so/guides/attribution/stripe-reports
         https://docs.stripe.com/api/customers/object  https://docs.stripe.com/api/charges/object
         https://docs.stripe.com/get-started/data-migrations/export-file-formats
         UTF-8, quotes only where needed, LF; times in UTC (the dialog's default zone). The
         documentation does not list the columns: the default customer columns and the payment
         column names are those public parsers of real exports use; the customer address
         column names follow the Dashboard's naming (documentation silent).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zoneinfo
from pathlib import Path

from cdm_pipeline_tests.export_fixtures.people import PEOPLE, Person

LONDON = zoneinfo.ZoneInfo("Europe/London")
P: dict[str, Person] = {p.key: p for p in PEOPLE}


def national(phone: str) -> str:
    """A Leeds number (people.py) as people type it at home: +441134960101 -> 0113 496 0101."""
    digits = "0" + phone[3:]
    return f"{digits[:4]} {digits[4:7]} {digits[7:]}"


def spaced(phone: str) -> str:
    """+441134960103 -> +44 113 496 0103."""
    return f"{phone[:3]} {phone[3:6]} {phone[6:9]} {phone[9:]}"


def _csv_bytes(rows: list[list[str]], *, quote_all: bool, line_end: str, encoding: str) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(
        buffer, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, lineterminator=line_end
    )
    writer.writerows(rows)
    return buffer.getvalue().encode(encoding)


def _write(landing_dir: Path, folder: str, day: dt.date, name: str, data: bytes) -> Path:
    path = landing_dir / folder / day.isoformat() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _london(day: dt.date, clock: str) -> dt.datetime:
    hour, minute, *second = (int(x) for x in clock.split(":"))
    return dt.datetime(day.year, day.month, day.day, hour, minute, second[0] if second else 0, tzinfo=LONDON)


# --- HubSpot contacts ----------------------------------------------------------------------------

HUBSPOT_HEADER = [
    "Record ID", "First Name", "Last Name", "Email", "Phone Number", "Mobile Phone Number",
    "Company Name", "Street Address", "City", "Postal Code", "State/Region", "Country/Region",
    "Lifecycle Stage", "Marketing contact status", "Unsubscribed from all email", "Contact owner",
    "Create Date", "Last Modified Date",
]


def write_hubspot_contacts(landing_dir: Path, day: dt.date) -> list[Path]:
    """A contacts view export: portal-local date-times ("2024-03-05 14:22") without offset."""
    d = day.isoformat()

    def row(record_id, person, *, first=None, email=None, phone="", mobile="", region="",
            country="United Kingdom", stage="Customer", marketing="Marketing contact",
            unsubscribed="", created, modified):
        return [
            record_id, first or person.first_name, person.last_name, email or person.email,
            phone, mobile, person.company, person.street, person.city, person.postcode, region,
            country, stage, marketing, unsubscribed, "Alex Morgan", created, modified,
        ]

    rows = [
        HUBSPOT_HEADER,
        # Winter (GMT) and summer (BST) creation times: the portal writes local time either way.
        row("51234567801", P["p01"], phone=national(P["p01"].phone), region="West Yorkshire",
            created="2023-11-14 09:05", modified=f"{d} 08:15"),
        # Nickname and an e-mail typed in capitals.
        row("51234567802", P["p02"], first="Ollie", email=P["p02"].email.upper(),
            phone=P["p02"].phone, stage="Lead", created="2023-07-03 16:40", modified=f"{d} 09:30"),
        row("51234567803", P["p03"], phone=spaced(P["p03"].phone), region="County Antrim",
            country="UK", created="2024-01-20 11:00", modified=f"{d} 10:45"),
        # Only a mobile number, and a company.
        row("51234567804", P["p04"], mobile=national(P["p04"].phone), region="Greater Manchester",
            created="2023-05-02 13:20", modified=f"{d} 11:05"),
        # Unsubscribed from all email: the one explicit consent statement in the file.
        row("51234567805", P["p05"], phone=P["p05"].phone, unsubscribed="Yes",
            created="2022-12-01 08:00", modified=f"{d} 12:10"),
        row("51234567806", P["p06"], phone="0" + P["p06"].phone[3:], stage="Lead",
            marketing="Non-marketing contact", unsubscribed="No", country="United Kingdom",
            created="2024-02-29 17:45", modified=f"{d} 13:00"),
        # No phone at all.
        row("51234567809", P["p09"], stage="Subscriber", created="2023-09-09 09:09",
            modified=f"{d} 14:20"),
        row("51234567812", P["p12"], phone=P["p12"].phone, created="2023-03-26 01:30",
            modified=f"{d} 15:35"),
    ]
    data = b"\xef\xbb\xbf" + _csv_bytes(rows, quote_all=True, line_end="\r\n", encoding="utf-8")
    return [_write(landing_dir, "hubspot/contacts", day, f"hubspot-crm-exports-all-contacts-{d}.csv", data)]


# --- Salesforce contacts -------------------------------------------------------------------------

SALESFORCE_HEADER = [
    "Contact ID", "First Name", "Last Name", "Email", "Phone", "Mobile", "Mailing Street",
    "Mailing City", "Mailing Zip/Postal Code", "Mailing State/Province", "Mailing Country",
    "Account Name", "Birthdate", "Email Opt Out", "Created Date", "Last Modified Date",
]


def write_salesforce_contacts(landing_dir: Path, day: dt.date) -> list[Path]:
    """A contacts report, Details only, as an English (UK) user exports it."""
    modified = day.strftime("%d/%m/%Y")

    def row(contact_id, person, *, first=None, phone="", mobile="", street=None, country="United Kingdom",
            account="", birthdate="", opt_out="0", created):
        return [
            contact_id, first or person.first_name, person.last_name, person.email, phone, mobile,
            street or person.street, person.city, person.postcode, "", country, account,
            birthdate, opt_out, created, modified,
        ]

    rows = [
        SALESFORCE_HEADER,
        row("0038d00000Qx1AA", P["p01"], mobile=national(P["p01"].phone), birthdate="14/07/1985",
            created="14/11/2023"),
        # Non-ASCII letters of ISO-8859-1.
        row("0038d00000Qx1AB", P["p03"], phone=spaced(P["p03"].phone), birthdate="02/02/1990",
            country="UK", created="20/01/2024"),
        row("0038d00000Qx1AC", P["p04"], phone=national(P["p04"].phone), account=P["p04"].company,
            created="02/05/2023"),
        # A two-line Mailing Street, and an explicit opt-out.
        row("0038d00000Qx1AD", P["p07"], mobile=P["p07"].phone, street=f"{P['p07'].street}\nUpper Flat",
            opt_out="1", birthdate="30/11/1978", created="03/07/2023"),
        row("0038d00000Qx1AE", P["p08"], phone=national(P["p08"].phone), account=P["p08"].company,
            created="15/06/2023"),
        row("0038d00000Qx1AF", P["p10"], mobile=national(P["p10"].phone), birthdate="09/03/1995",
            created="01/03/2024"),
        row("0038d00000Qx1AG", P["p11"], phone=P["p11"].phone, created="26/10/2023"),
    ]
    data = _csv_bytes(rows, quote_all=True, line_end="\n", encoding="latin-1")
    stamp = int(_london(day, "09:00").timestamp() * 1000)
    return [_write(landing_dir, "salesforce/contacts", day, f"report{stamp}.csv", data)]


# --- Shopify orders ------------------------------------------------------------------------------

SHOPIFY_ORDERS_HEADER = [
    "Name", "Email", "Financial Status", "Paid at", "Fulfillment Status", "Fulfilled at",
    "Accepts Marketing", "Currency", "Subtotal", "Shipping", "Taxes", "Total", "Discount Code",
    "Discount Amount", "Shipping Method", "Created at", "Lineitem quantity", "Lineitem name",
    "Lineitem price", "Lineitem compare at price", "Lineitem sku", "Lineitem requires shipping",
    "Lineitem taxable", "Lineitem fulfillment status", "Billing Name", "Billing Street",
    "Billing Address1", "Billing Address2", "Billing Company", "Billing City", "Billing Zip",
    "Billing Province", "Billing Country", "Billing Phone", "Shipping Name", "Shipping Street",
    "Shipping Address1", "Shipping Address2", "Shipping Company", "Shipping City", "Shipping Zip",
    "Shipping Province", "Shipping Country", "Shipping Phone", "Notes", "Note Attributes",
    "Cancelled at", "Payment Method", "Payment Reference", "Refunded Amount", "Vendor",
    "Outstanding Balance", "Employee", "Location", "Device ID", "Id", "Tags", "Risk Level",
    "Source", "Lineitem discount", "Tax 1 Name", "Tax 1 Value", "Tax 2 Name", "Tax 2 Value",
    "Tax 3 Name", "Tax 3 Value", "Tax 4 Name", "Tax 4 Value", "Tax 5 Name", "Tax 5 Value",
    "Phone", "Receipt Number", "Duties", "Billing Province Name", "Shipping Province Name",
    "Payment ID", "Payment Terms Name", "Next Payment Due At", "Payment References",
]
# Columns a line-item row (every row but an order's first) fills.
_LINE_ITEM_COLUMNS = {
    "Name", "Email", "Created at", "Lineitem quantity", "Lineitem name", "Lineitem price",
    "Lineitem compare at price", "Lineitem sku", "Lineitem requires shipping", "Lineitem taxable",
    "Lineitem fulfillment status", "Vendor", "Lineitem discount",
}

# (name, person, clock, financial status, accepts marketing, items [(title, sku, qty, price)],
#  extras). Orders are listed newest first, as the export lists them.
_SHOPIFY_ORDERS = [
    ("#1005", "p04", "16:20:11", "voided", "no",
     [("Canvas Tote Bag", "TOTE-NAT", 10, "12.50"), ("Enamel Mug, Large", "MUG-L-WHT", 10, "9.00")],
     {"shipping": "0.00", "company": True, "cancelled": "16:45:02", "phone": "national"}),
    ("#1004", "p01", "13:02:37", "paid", "yes",
     [("Organic Cotton Tee - Navy / L", "TEE-NVY-L", 1, "18.00"),
      ("Beeswax Wraps (set of 3)", "WRAP-3", 2, "8.50"), ("Gift Wrap", "GIFT-WRAP", 1, "2.50")],
     {"phone": "national"}),
    # A guest checkout: e-mail typed in capitals, no phone, payment only authorised.
    ("#1003", "p03", "10:41:09", "authorized", "no",
     [("Linen Apron - Sage", "APRON-SGE", 1, "26.00")],
     {"email": "upper", "phone": None}),
    ("#1002", "p02", "07:58:44", "partially_refunded", "no",
     [("Merino Beanie - Charcoal", "BEANIE-CHR", 1, "22.00"), ("Wool Socks (3 pack)", "SOCK-3", 1, "14.00")],
     {"refunded": "14.00", "notes": "Please leave with a neighbour\nif nobody is in", "phone": "e164"}),
    # The repeat buyer's first order, at 05:56:42 local time.
    ("#1001", "p01", "05:56:42", "paid", "yes",
     [("Organic Cotton Tee - Navy / M", "TEE-NVY-M", 2, "18.00"), ("Canvas Tote Bag", "TOTE-NAT", 1, "12.50"),
      ("Enamel Mug, Large", "MUG-L-WHT", 1, "9.00")],
     {"phone": "e164"}),
]


def _money(value: float) -> str:
    return f"{value:.2f}"


def _shopify_time(day: dt.date, clock: str) -> str:
    return _london(day, clock).strftime("%Y-%m-%d %H:%M:%S %z")


def write_shopify_orders(landing_dir: Path, day: dt.date) -> list[Path]:
    """Orders > Export: one row per line item, order fields on each order's first row."""
    rows = [SHOPIFY_ORDERS_HEADER]
    order_id = 5612345678900
    for name, key, clock, status, accepts, items, extra in _SHOPIFY_ORDERS:
        person = P[key]
        created = _shopify_time(day, clock)
        subtotal = sum(qty * float(price) for _, _, qty, price in items)
        shipping = float(extra.get("shipping", "3.95"))
        total = subtotal + shipping
        email = person.email.upper() if extra.get("email") == "upper" else person.email
        phone = {"national": national(person.phone), "e164": person.phone, None: ""}[extra.get("phone")]
        street = person.street
        paid = status in ("paid", "partially_refunded")
        order_number = int(name[1:])
        first = {
            "Name": name, "Email": email, "Financial Status": status,
            "Paid at": created if paid else "", "Fulfillment Status": "fulfilled" if paid else "unfulfilled",
            "Fulfilled at": _shopify_time(day, "17:30:00") if paid else "",
            "Accepts Marketing": accepts, "Currency": "GBP", "Subtotal": _money(subtotal),
            "Shipping": _money(shipping), "Taxes": _money(total / 6), "Total": _money(total),
            "Discount Amount": "0.00", "Shipping Method": "Royal Mail Tracked 48" if shipping else "Collection",
            "Created at": created,
            "Billing Name": f"{person.first_name} {person.last_name}", "Billing Street": street,
            "Billing Address1": street, "Billing Company": person.company if extra.get("company") else "",
            "Billing City": person.city, "Billing Zip": person.postcode, "Billing Country": "GB",
            "Billing Phone": phone,
            "Shipping Name": f"{person.first_name} {person.last_name}", "Shipping Street": street,
            "Shipping Address1": street, "Shipping Company": person.company if extra.get("company") else "",
            "Shipping City": person.city, "Shipping Zip": person.postcode, "Shipping Country": "GB",
            "Shipping Phone": phone, "Notes": extra.get("notes", ""),
            "Cancelled at": _shopify_time(day, extra["cancelled"]) if "cancelled" in extra else "",
            "Payment Method": "Shopify Payments", "Payment Reference": f"c{order_id}.1",
            "Refunded Amount": extra.get("refunded", "0.00"), "Outstanding Balance": "0.00",
            "Id": str(order_id + order_number), "Risk Level": "Low", "Source": "web",
            "Tax 1 Name": "GB VAT 20%", "Tax 1 Value": _money(total / 6), "Phone": "",
            "Payment ID": f"c{order_id}.1", "Payment References": f"c{order_id}.1",
        }
        for index, (title, sku, qty, price) in enumerate(items):
            line = {
                "Name": name, "Email": email, "Created at": created, "Lineitem quantity": str(qty),
                "Lineitem name": title, "Lineitem price": price, "Lineitem sku": sku,
                "Lineitem requires shipping": "true", "Lineitem taxable": "true",
                "Lineitem fulfillment status": "fulfilled" if paid else "pending",
                "Vendor": "Northern Goods", "Lineitem discount": "0.00",
            }
            values = {**first, **line} if index == 0 else line
            assert index == 0 or set(values) <= _LINE_ITEM_COLUMNS
            rows.append([values.get(column, "") for column in SHOPIFY_ORDERS_HEADER])
    data = _csv_bytes(rows, quote_all=False, line_end="\n", encoding="utf-8")
    return [_write(landing_dir, "shopify/orders", day, "orders_export_1.csv", data)]


# --- Shopify customers ---------------------------------------------------------------------------

SHOPIFY_CUSTOMERS_HEADER = [
    "Customer ID", "First Name", "Last Name", "Email", "Accepts Email Marketing",
    "Default Address Company", "Default Address Address1", "Default Address Address2",
    "Default Address City", "Default Address Province Code", "Default Address Country Code",
    "Default Address Zip", "Default Address Phone", "Phone", "Accepts SMS Marketing",
    "Total Spent", "Total Orders", "Note", "Tax Exempt", "Tags",
]


def write_shopify_customers(landing_dir: Path, day: dt.date) -> list[Path]:
    """Customers > Export: the new customers page's 20 columns, apostrophes as Shopify writes them."""

    def row(customer_id, person, *, email=None, accepts="no", phone=True, address_phone=True,
            company="", spent="0.00", orders="0", note="", tags=""):
        return [
            f"'{customer_id}", person.first_name, person.last_name, email or person.email, accepts,
            company, person.street, "", person.city, "", "GB", person.postcode,
            f"'{person.phone}" if address_phone else "", f"'{person.phone}" if phone else "",
            "no", spent, orders, note, "no", tags,
        ]

    rows = [
        SHOPIFY_CUSTOMERS_HEADER,
        row(7406721040531, P["p01"], accepts="yes", spent="102.90", orders="2", tags="newsletter, repeat"),
        row(7406721040532, P["p02"], phone=False, spent="39.95", orders="1"),
        # A guest who ticked the newsletter box at a later checkout; no phone anywhere.
        row(7406721040533, P["p03"], accepts="yes", phone=False, address_phone=False),
        row(7406721040534, P["p04"], company=P["p04"].company, tags="wholesale",
            note="Invoices to accounts@ address"),
        row(7406721040535, P["p05"], accepts="no"),
        # An e-mail in mixed case.
        row(7406721040540, P["p10"], email="Noah.Patel@btinternet.com", accepts="yes"),
    ]
    data = _csv_bytes(rows, quote_all=False, line_end="\n", encoding="utf-8")
    return [_write(landing_dir, "shopify/customers", day, "customers_export.csv", data)]


# --- Stripe customers ----------------------------------------------------------------------------

STRIPE_CUSTOMERS_HEADER = [
    "id", "Description", "Email", "Name", "Created (UTC)", "Delinquent", "Plan", "Status",
    "Total Spend", "Payment Count", "Refunded Volume", "Dispute Losses", "Phone",
    "Address Line1", "Address Line2", "Address City", "Address State", "Address Country",
    "Address Zip",
]
# The Stripe customer ids shared by both Stripe writers.
STRIPE_CUSTOMER_IDS = {
    "p01": "cus_PqR8sT1uVwXyZa", "p02": "cus_PqR8sT1uVwXyZb", "p05": "cus_PqR8sT1uVwXyZc",
    "p08": "cus_PqR8sT1uVwXyZd", "p09": "cus_PqR8sT1uVwXyZe", "p10": "cus_PqR8sT1uVwXyZf",
}


def write_stripe_customers(landing_dir: Path, day: dt.date) -> list[Path]:
    """Customers > Export with All columns: Created (UTC), one Name column."""
    d = day.isoformat()

    def row(key, *, name=None, description="", phone="", address=True, created, spend="0.00", count="0"):
        person = P[key]
        street, city, postcode, country = (
            (person.street, person.city, person.postcode, "GB") if address else ("", "", "", "")
        )
        return [
            STRIPE_CUSTOMER_IDS[key], description, person.email,
            f"{person.first_name} {person.last_name}" if name is None else name, created,
            "false", "", "", spend, count, "0.00", "0.00", phone, street, "", city, "", country, postcode,
        ]

    rows = [
        STRIPE_CUSTOMERS_HEADER,
        row("p01", phone=P["p01"].phone, created="2023-11-14 09:06", spend="72.90", count="2"),
        row("p02", phone=national(P["p02"].phone), created="2024-01-05 18:22", spend="39.95", count="1"),
        row("p05", created="2023-02-11 12:00", spend="24.50", count="1"),
        # A business customer: the company in Description, the person in Name.
        row("p08", description=P["p08"].company, created=f"{d} 08:01"),
        row("p09", address=False, created=f"{d} 09:15"),
        # Only an e-mail: a customer created by an invoice, no name.
        row("p10", name="", address=False, description="Wholesale enquiry", created="2024-03-28 14:47",
            spend="60.00", count="1"),
    ]
    data = _csv_bytes(rows, quote_all=False, line_end="\n", encoding="utf-8")
    return [_write(landing_dir, "stripe/customers", day, "unified_customers.csv", data)]


# --- Stripe charges ------------------------------------------------------------------------------

STRIPE_CHARGES_HEADER = [
    "id", "Created date (UTC)", "Amount", "Amount Refunded", "Currency", "Captured",
    "Converted Amount", "Converted Amount Refunded", "Converted Currency", "Fee", "Is Link",
    "Mode", "Payment Source Type", "Status", "Taxes On Fee", "Description",
    "Statement Descriptor", "Customer ID", "Customer Description", "Customer Email", "Card ID",
    "Card Last4", "Card Brand", "Card Funding", "Card Exp Month", "Card Exp Year", "Card Name",
    "Card Address Line1", "Card Address Line2", "Card Address City", "Card Address State",
    "Card Address Country", "Card Address Zip", "Card Issue Country", "Invoice ID",
    "PaymentIntent ID", "Transfer",
]


def write_stripe_charges(landing_dir: Path, day: dt.date) -> list[Path]:
    """Payments > Export: one row per charge, newest first, amounts in major units."""
    d = day.isoformat()

    def row(charge_id, clock, amount, status, *, key=None, refunded="0.00", captured="true",
            card_name=None, guest=None, source="card", card=True):
        person = P[key] if key else P[guest]
        customer_id = STRIPE_CUSTOMER_IDS[key] if key else ""
        fee = _money(float(amount) * 0.015 + 0.20) if status != "Failed" else "0.00"
        card_columns = (
            [f"card_1P{charge_id[-6:]}", "4242", "Visa", "debit", "8", "2027",
             f"{person.first_name} {person.last_name}" if card_name is None else card_name,
             person.street, "", person.city, "", "GB", person.postcode, "GB"]
            if card else [""] * 14
        )
        return [
            charge_id, f"{d} {clock}", amount, refunded, "gbp", captured, amount, refunded, "gbp",
            fee, "false", "Live", source, status, "0.00", "Online shop order", "NORTHERN GOODS",
            customer_id, "", person.email, *card_columns, "", f"pi_3P{charge_id[-8:]}", "",
        ]

    rows = [
        STRIPE_CHARGES_HEADER,
        row("ch_3PbQ2aLkdIwHu7ix0K1a2b06", "17:05:12", "18.00", "Paid", key="p01"),
        # A guest: no Stripe customer, the e-mail typed at checkout, the name as on the card.
        row("ch_3PbQ2aLkdIwHu7ix0K1a2b05", "15:44:03", "15.00", "Paid", guest="p12"),
        # Paid by bank debit: no card columns.
        row("py_3PbQ2aLkdIwHu7ix0K1a2b04", "14:02:58", "60.00", "Paid", key="p10",
            source="bacs_debit", card=False),
        row("ch_3PbQ2aLkdIwHu7ix0K1a2b03", "12:30:00", "120.00", "Failed", key="p08", captured="false"),
        # The cardholder's name as embossed: capitals, no accent.
        row("ch_3PbQ2aLkdIwHu7ix0K1a2b02", "10:15:27", "24.50", "Refunded", key="p05",
            refunded="24.50", card_name="CHLOE DUBOIS"),
        row("ch_3PbQ2aLkdIwHu7ix0K1a2b01", "08:09:41", "39.95", "Partially refunded", key="p02",
            refunded="14.00"),
        row("ch_3PbQ2aLkdIwHu7ix0K1a2b00", "06:59:30", "54.90", "Paid", key="p01"),
    ]
    data = _csv_bytes(rows, quote_all=False, line_end="\n", encoding="utf-8")
    return [_write(landing_dir, "stripe/charges", day, "unified_payments.csv", data)]


WRITERS = {
    "hubspot_contacts": write_hubspot_contacts,
    "salesforce_contacts": write_salesforce_contacts,
    "shopify_orders": write_shopify_orders,
    "shopify_customers": write_shopify_customers,
    "stripe_customers": write_stripe_customers,
    "stripe_charges": write_stripe_charges,
}

# Facts the tests check: rows as written (after the header), records once staged, and which
# people are in the file.
EXPECTED = {
    "hubspot_contacts": {"rows": 8, "records": 8, "people": ["p01", "p02", "p03", "p04", "p05", "p06", "p09", "p12"],
                         "opted_out": ["p05"]},
    "salesforce_contacts": {"rows": 7, "records": 7, "people": ["p01", "p03", "p04", "p07", "p08", "p10", "p11"],
                            "opted_out": ["p07"]},
    "shopify_orders": {"orders": 5, "line_item_rows": 11, "rows": 11, "records": 5,
                       "statuses": {"#1001": "completed", "#1002": "completed", "#1003": "pending",
                                    "#1004": "completed", "#1005": "cancelled"},
                       "totals": {"#1001": "61.45", "#1002": "39.95", "#1003": "29.95",
                                  "#1004": "41.45", "#1005": "215.00"},
                       "buyers": {"#1001": "p01", "#1002": "p02", "#1003": "p03", "#1004": "p01", "#1005": "p04"}},
    "shopify_customers": {"rows": 6, "records": 6, "people": ["p01", "p02", "p03", "p04", "p05", "p10"],
                          "opted_in": ["p01", "p03", "p10"]},
    "stripe_customers": {"rows": 6, "records": 6, "people": ["p01", "p02", "p05", "p08", "p09", "p10"]},
    "stripe_charges": {"rows": 7, "records": 7,
                       "statuses": {"completed": 5, "refunded": 1, "cancelled": 1},
                       "guests": 1},
}
