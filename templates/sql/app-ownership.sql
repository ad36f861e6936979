-- Gives the role a service connects as ({role}) schema public and every table, view and
-- sequence in it: after `stackctl up` on a database whose objects the superuser made, and after
-- every restore (a dump names the owners it had). Sequences owned by a column follow their
-- table. Run in one transaction by the caller.
ALTER SCHEMA public OWNER TO {role};
DO $own$
DECLARE object record;
BEGIN
    FOR object IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND pg_get_userbyid(c.relowner) <> '{role}'
          AND NOT (c.relkind = 'S' AND EXISTS (
              SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE format('ALTER TABLE public.%I OWNER TO {role}', object.relname);
    END LOOP;
END
$own$;
