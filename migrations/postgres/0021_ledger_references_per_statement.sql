-- The ledger's references (a posting's entry and account, an entry's
-- organisation) were foreign keys, checked row by row: a month-end batch of
-- a hundred renewals wrote two hundred entries and four hundred postings,
-- and ran one lookup-and-lock query per row, six hundred in all, most of
-- them locking the same two accounts and one organisation again. They are
-- now checked once per statement, over all the rows it inserted:
--
-- * a posting's entry must exist. Entries can be neither changed nor
--   deleted (0001) nor truncated (below), so one that exists stays;
-- * a posting's accounts and an entry's organisation must exist, and are
--   locked as a foreign key locks them (FOR KEY SHARE), once per distinct
--   row, until the transaction ends: a concurrent delete waits, then finds
--   the new rows and is refused;
-- * an account with postings, or an organisation with entries, cannot be
--   deleted or given another id (the foreign keys' NO ACTION), and the
--   ledger's tables cannot be truncated out from under each other.
--
-- The errors carry the foreign-key SQLSTATE (23503), as before.

ALTER TABLE ledger_postings
    DROP CONSTRAINT ledger_postings_entry_id_fkey,
    DROP CONSTRAINT ledger_postings_account_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_org_id_fkey;

-- Each distinct row referred to is looked up by its key, as a foreign key
-- looks it up, rather than joined: a join's plan is cached for the session
-- and chosen while the ledger is small, and would go on scanning the
-- entries as they grow.
CREATE FUNCTION ledger_postings_check_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted BIGINT;
BEGIN
    FOR wanted IN SELECT DISTINCT account_id FROM new_postings ORDER BY 1 LOOP
        PERFORM FROM ledger_accounts WHERE id = wanted FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'a posting refers to account %, which does not exist', wanted
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    FOR wanted IN SELECT DISTINCT entry_id FROM new_postings LOOP
        PERFORM FROM ledger_entries WHERE id = wanted;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'a posting refers to entry %, which does not exist', wanted
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledger_postings_references AFTER INSERT ON ledger_postings
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_postings_check_references();

CREATE FUNCTION ledger_entries_check_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wanted BIGINT;
BEGIN
    FOR wanted IN SELECT DISTINCT org_id FROM new_entries ORDER BY 1 LOOP
        PERFORM FROM organisations WHERE id = wanted FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'an entry refers to organisation %, which does not exist', wanted
                USING ERRCODE = 'foreign_key_violation';
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledger_entries_references AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_check_references();

-- What the foreign keys refused: removing (or renumbering) a row the
-- ledger still refers to.
CREATE FUNCTION ledger_refuse_removing_referenced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.id = NEW.id THEN
        RETURN NEW;
    END IF;
    IF (TG_TABLE_NAME = 'ledger_accounts'
            AND EXISTS (SELECT 1 FROM ledger_postings WHERE account_id = OLD.id))
       OR (TG_TABLE_NAME = 'organisations'
            AND EXISTS (SELECT 1 FROM ledger_entries WHERE org_id = OLD.id)) THEN
        RAISE EXCEPTION '% % is still referred to by the ledger', TG_TABLE_NAME, OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END;
$$;

CREATE TRIGGER ledger_accounts_referenced BEFORE UPDATE OF id OR DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_removing_referenced();
CREATE TRIGGER organisations_referenced BEFORE UPDATE OF id OR DELETE ON organisations
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_removing_referenced();

CREATE FUNCTION ledger_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger_entries) THEN
        RAISE EXCEPTION '% cannot be truncated while the ledger has entries', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_accounts_no_truncate BEFORE TRUNCATE ON ledger_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_truncate();
CREATE TRIGGER organisations_no_truncate BEFORE TRUNCATE ON organisations
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_truncate();
