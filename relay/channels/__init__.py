"""Ways a notification leaves the relay: email (SMTP or maildir) and signed webhooks."""
