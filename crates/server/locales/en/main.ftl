site-name = kanpa
site-tagline = Raise money together, support each other. Crowdfunding and monthly patrons on one shared ledger.
nav-language = 日本語
home-heading = Welcome to kanpa
home-campaigns = Open campaigns
home-no-campaigns = There are no open campaigns right now.
home-salons = Salons
home-no-salons = There are no salons to join right now.
footer-powered = kanpa — self-hosted crowdfunding and membership billing
error-heading = Error
error-back-home = Back to the home page
error-request-id = If you contact us, please quote this reference: { $id }
error-not-found = We could not find the page you were looking for.
error-bad-request = Please check what you entered.
error-conflict = This clashed with another change. Please try again.
error-unprocessable = Some of what you entered is not valid.
error-internal = Sorry, something went wrong on our side. Please try again in a little while.
error-unavailable = The service is unavailable right now. Please try again shortly.
error-payload-too-large = What you sent is too large.
error-timeout = That took too long. Please try again.
api-error-unauthorized = An API token is required (Authorization: Bearer …); the token given is unknown or revoked.
api-error-forbidden = This token's role does not allow this.
api-error-invalid-json = The request's JSON could not be read
campaign-error-required = Please fill this in.
campaign-error-too-long = Use at most { $max } characters.
campaign-error-amount = Enter the amount in whole yen using digits, for example 3000.
campaign-error-amount-negative = The amount cannot be negative.
campaign-error-amount-full-width = Type the amount with half-width digits, for example 3000.
campaign-error-amount-huge = That amount is too large.
campaign-error-amount-decimal = Amounts in yen have no decimals.
campaign-error-below-minimum = Enter at least { $min }.
campaign-error-above-maximum = Enter at most { $max }.
campaign-error-email = That email address does not look right.
campaign-error-slug = Use 3 to 64 lowercase letters, digits and hyphens.
campaign-error-datetime = Give the date and time like 2026-12-31T23:59:00+09:00.
campaign-error-deadline-before-start = The deadline must come after the start.
campaign-error-choice = That value is not one of the choices.
campaign-error-currency = That currency is not supported.
campaign-error-unknown-team = The team you chose is not part of this campaign.
campaign-error-unknown-reward = The reward you chose is not part of this campaign.
campaign-error-slug-taken = That slug is already taken.
campaign-error-wrong-state = Not possible while the campaign is { $status }.
campaign-error-closed = This campaign is not taking pledges right now.
campaign-error-sold-out = This reward is sold out. Please choose another one.
campaign-error-reward-unavailable = This reward cannot be chosen right now (outside its dates, or for another team).
campaign-error-pledge-locked = This pledge can no longer be changed (the deadline has passed, or it was charged or cancelled).
campaign-error-link-expired = This sign-in link has expired or was already used. Please ask for a new one.
campaign-error-gateway = We could not reach the payment service. Nothing was charged. Please try again in a moment.
salon-error-unknown-tier = The tier you chose is not part of this salon.
salon-error-tier-retired = This tier is no longer taking new members. Please choose another one.
salon-error-tier-full = This tier is full. Please choose another one.
salon-error-already-member = This email address already has a membership of this salon. Sign in to manage it.
salon-error-wrong-state = Not possible while the salon is { $status }.
salon-error-membership-state = Not possible while the membership is { $status }.
salon-error-url = Give a link starting with https:// or http://.
salon-error-out-of-range = Enter a number from { $min } to { $max }.
error-cross-site = This form was sent from another site, so it was not accepted. Please open the page again and retry.

# Progress, time, funding model
progress-label = { $raised } of { $goal } ({ $percent }%)
backers-count = { $n ->
    [one] 1 backer
   *[other] { $n } backers
}
time-starts = Starts { $at }
time-left-days = { $n ->
    [one] 1 day left
   *[other] { $n } days left
}
time-left-hours = { $n ->
    [one] 1 hour left
   *[other] { $n } hours left
}
time-left-minutes = { $n ->
    [one] 1 minute left
   *[other] { $n } minutes left
}
time-ended = Ended
time-succeeded = Goal reached, closed
time-failed = Goal not reached (nobody was charged)
model-all-or-nothing = All-or-nothing: cards are charged after the deadline only if the goal is reached by { $deadline }. Otherwise nobody pays anything.
model-keep-it-all = Keep-it-all: you pay now, and the money goes to the teams even if the goal is not reached.
team-pool = The whole drive (no team)

# The campaign page
campaign-totals = Progress
campaign-raised = Raised
campaign-goal = Goal
campaign-backers = Backers
campaign-time-left = Deadline
campaign-pledge-button = Back this campaign
campaign-closed = This campaign is not taking pledges right now.
campaign-teams = Teams
campaign-support-team = Support this team
campaign-story = The story
campaign-rewards = Rewards
campaign-choose-reward = Pledge for this reward
campaign-wall = Supporters
campaign-wall-empty = No pledges yet. Be the first to back it.
campaign-contact = Contact the organisers:
wall-anonymous = Anonymous
reward-minimum = { $amount } or more
reward-remaining = { $n } left
reward-sold-out = Sold out
reward-team-only = Only for pledges to the { $team } team
reward-not-now = Not available at the moment
embed-cta = See more and back it →

# The pledge form
pledge-heading = Make a pledge
pledge-team = Support
pledge-team-pool = The whole drive (no particular team)
pledge-reward = Reward
pledge-no-reward = No reward, just support
pledge-amount = Amount (yen)
pledge-amount-hint = Whole yen, digits only ({ $min } or more).
pledge-display-name = Your name (shown on the supporters' wall)
pledge-display-name-hint = A nickname is fine.
pledge-anonymous = Pledge anonymously (do not show my name)
pledge-message = Message (optional, shown publicly)
pledge-email = Email address
pledge-email-hint = For your confirmation and a link to review or change your pledge. Never shown.
pledge-next-all-or-nothing = Next you save your card. Nothing is charged now: your card is charged after the deadline only if the goal is reached by { $deadline }.
pledge-next-keep-it-all = Next you choose how to pay (card or convenience store) and pay.
pledge-submit = Continue to payment
pledge-cancelled-notice = You left the payment page. Nothing was charged. You can check the details and try again.

field-amount = Amount
field-email = Email address
field-display-name = Name
field-message = Message
field-team = Team
field-reward = Reward
field-problem = { $field }: { $problem }

# Thank you
thanks-heading = Thank you for your support
thanks-pending-heading = Confirming your payment…
thanks-pending = We are waiting for the payment provider to confirm. This page refreshes itself every few seconds.
thanks-refreshing = If it does not refresh, reload the page.
thanks-committed = Your card is saved. It will be charged only if the goal is met by { $deadline }. We have emailed you a confirmation.
thanks-awaiting-payment = Your payment slip is ready: please pay at the convenience store before it expires. We will email a receipt once the payment arrives.
thanks-collected = Paid. We have emailed you a receipt.
thanks-failed-heading = Your payment is not complete
thanks-payment-failed = We could not charge your card after the deadline. Please pay from "My pledges".
thanks-not-completed = This pledge was not completed. Nothing was charged.
thanks-refunded = This pledge was refunded.
thanks-try-again = Pledge again
thanks-back = Back to the campaign
thanks-my-pledges = My pledges

# The sandbox checkout
sandbox-title = Test checkout
sandbox-banner = Test checkout — no real money moves
sandbox-description = For
sandbox-amount = Amount
sandbox-email = Email
sandbox-setup-explained = This only saves a card; nothing is charged now (the card is charged after the deadline if the goal is met).
sandbox-pay = Pay
sandbox-save-card = Save card
sandbox-decline = Card is declined
sandbox-authenticate = Card needs authentication
sandbox-save-card-authentication = Save a card that will need authentication later
sandbox-cancel = Cancel and go back
sandbox-authentication-heading = Authentication (3-D Secure)
sandbox-authentication-explained = The card issuer asks the payer to confirm. This is a test: choose the outcome.
sandbox-authentication-pass = Authentication succeeds
sandbox-authentication-fail = Authentication fails
sandbox-closed = This checkout is already finished or has expired.
sandbox-declined-card = The card was declined (card_declined). Choose another outcome.
sandbox-declined-authentication = Authentication failed. Choose another outcome.

# My pledges
me-heading = My pledges
me-sign-in-explained = We will email a sign-in link (valid for 30 minutes, once) to the address you pledged with. No password needed.
me-send-link = Email me a sign-in link
me-link-sent-heading = Check your email
me-link-sent = If this address has pledges, a sign-in link is on its way. Open it within 30 minutes.
me-signed-out = You are signed out.
me-sign-out = Sign out
me-none = There are no pledges with this email address yet.
me-amount = Amount
me-target = Supporting
me-reward = Reward
me-pay = Pay now
me-receipt = View receipt
me-change = Change or cancel
me-save = Save changes
me-cancel = Cancel this pledge
me-changed = Your pledge was changed.
me-cancelled = Your pledge was cancelled. You will not be charged.
status-pending = Payment in progress
status-committed = Card saved (charged after the deadline)
status-awaiting_payment = Awaiting payment at the convenience store
status-collected = Paid
status-payment_failed = Payment failed (please pay)
status-dropped = Not paid in time, cancelled
status-cancelled = Cancelled
status-expired = Not completed
status-void = Goal not reached, nothing charged
status-refunded = Refunded

# Receipts
receipt-heading = Receipt
receipt-heading-qualified = Receipt (qualified invoice)
receipt-not-invoice = This receipt is not a qualified invoice (the issuer has no qualified-invoice registration number).
receipt-number = Receipt number
receipt-to = Received from
receipt-to-suffix = {""}
receipt-received = Received with thanks.
receipt-issuer = Issued by
receipt-registration = Registration number
receipt-issued-on = Issued on
receipt-paid-on = Transaction date
receipt-description = Description
receipt-rate = Tax rate
receipt-amount = Amount
receipt-total = Total (tax included)
receipt-not-taxable = Not taxable
receipt-rate-total = { $rate } items { $amount } (of which consumption tax { $tax })
receipt-rate-total-exclusive = { $rate } items { $amount }, consumption tax { $tax }
receipt-donation-note = Donations (support with nothing in return) are outside consumption tax.
receipt-reduced-note = Items marked ※ are at the reduced rate (8%).
receipt-tax-heading = By tax rate
receipt-reference = Payment references
receipt-pledge = Pledge ID
receipt-charge = Payment ID
receipt-invoice = Invoice ID
receipt-print = Use your browser's print function to print or save as PDF (one A4 page).
receipt-legal = Legal disclosure (Specified Commercial Transactions Act)

# Salons
salon-per-month = { $price } / month
salon-choose-tier = Choose a tier
salon-full = Full
salon-seats-left = { $n } places left
salon-join = Join
salon-closed = This salon is not taking new members right now.
salon-terms-heading = Before you pay
salon-terms-price = The price shown is charged to your card every month until you cancel.
salon-terms-start-date = The first month is charged today; then each month on the same day.
salon-terms-first-of-month = Today you pay for the rest of this month (by the day); from then on the full price is charged on the 1st of each month.
salon-terms-cancel = You can cancel at any time from your page (/me, with a sign-in link sent by email). You keep access until the end of the month you paid for, and nothing more is charged.
salon-terms-pause = You can also pause for one to three months, or change tier, from the same page.
salon-members-link = Members' area
salon-members-heading = Members' area
salon-members-empty = Nothing here yet.
salon-members-sign-in = Sign in with the email address you joined with to see the members' area.
salon-members-not-member = This page is for members. Join to see it.
salon-members-past-due = Your last payment did not go through. Please update your card from your page to keep access.
salon-members-paused = Your membership is paused. Resume it from your page to see the members' area.
salon-welcome-heading = Welcome
salon-welcome-waiting = We are confirming your payment. This page updates by itself.
salon-welcome-confirmed = Your membership is active. A receipt is on its way by email.
me-memberships-heading = My memberships
me-membership-tier = Tier
me-membership-schedule = Billing
me-membership-paid = Paid so far
me-membership-payments = Payment history
me-membership-next-charge = Next charge: { $amount } on { $date }
me-membership-ends = Ends on { $date }; nothing more is charged
me-membership-paused-until = Paused until { $date }
me-membership-card = Update your card
me-membership-change-tier = Change tier
me-membership-pause = Pause for (months)
me-membership-pause-button = Pause
me-membership-resume = Resume now
me-membership-undo = Keep my membership
me-membership-cancel = Cancel at the end of the paid period
me-membership-requested = Your request was sent. This page shows the change as soon as the payment service confirms it.
membership-status-incomplete = Waiting for payment
membership-status-active = Active
membership-status-past_due = Payment failed
membership-status-paused = Paused
membership-status-canceling = Ending
membership-status-ended = Ended
home-salon-from = From { $price } / month

# The legal disclosure (Specified Commercial Transactions Act) and seller settings
legal-heading = Legal disclosure (Specified Commercial Transactions Act)
legal-link = Legal disclosure
legal-checkout-note = Before you pay, see who sells and the cancellation terms:
legal-not-set = (not set)
seller-field-seller_name = Seller
seller-field-representative = Responsible representative
seller-field-address = Address
seller-field-contact_email = Email
seller-field-contact_phone = Telephone
seller-field-extra_costs_ja = Costs besides the price
seller-field-delivery_ja = Delivery timing
seller-field-cancellation_ja = Returns and cancellation
seller-field-registration_number = Qualified-invoice registration number
seller-field-tax_rounding = Rounding of consumption tax
legal-prices = Prices
legal-prices-text = As shown on each campaign's rewards and each salon's tiers, consumption tax included. Pledges without a reward are of the amount you choose.
legal-payment-methods = Payment methods
legal-payment-methods-text = Credit card (processed by Stripe). Campaigns that charge at once also accept convenience-store payment.
legal-payment-timing = When you pay
legal-payment-timing-text = Campaigns that charge at once: when you pledge. All-or-nothing campaigns: after the deadline, only if the goal is reached. Salons: when you join and then on each monthly billing day.
legal-subscription = Subscription terms (salons)
legal-subscription-text = A salon's monthly fee is charged automatically every month until you cancel. You can cancel, pause or change tier at any time from My page; cancelling takes effect at the end of the period already paid, with no further charges. There are no prorated refunds.
legal-invoice = Receipts
legal-invoice-text = Each payment has a receipt on My page.
seller-error-incomplete = Cannot go live while the legal disclosure lacks: { $fields }. Fill them in with kanpa org settings or the API (/api/v1/organisation/settings).
seller-error-too-long = must be at most { $max } characters
seller-error-email = is not an email address
seller-error-phone = is not a telephone number
seller-error-registration-form = must be "T" followed by 13 digits
seller-error-registration-check-digit = has a wrong check digit (the first digit); please check the number
seller-error-rounding = must be floor, round or ceil
api-error-owner-only = Only an owner's token may do this.
