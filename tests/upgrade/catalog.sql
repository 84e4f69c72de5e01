-- Everything an extension script decides about courier's objects, one line per fact, sorted, so
-- that an upgraded database and a fresh install can be compared with diff. Names only, never OIDs.
\pset format unaligned
\pset tuples_only on
\pset footer off

WITH ext AS (SELECT oid, extnamespace FROM pg_extension WHERE extname = 'courier'),
-- Functions an update retired (renamed, to be dropped by the next release's update) are not part
-- of the version's catalog; run.sh lists them.
members AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
      AND NOT (d.classid = 'pg_proc'::regclass
               AND (SELECT p.proname FROM pg_proc p WHERE p.oid = d.objid) LIKE '\_retired\_%')
),
facts(line) AS (
    -- The extension itself.
    SELECT 'extension: schema=' || e.extnamespace::regnamespace || ' relocatable=' || e.extrelocatable
           || ' config=' || COALESCE((SELECT string_agg(c::regclass::text || ' where ''' || w || '''', ', '
                                                        ORDER BY c::regclass::text)
                                      FROM unnest(e.extconfig, e.extcondition) AS u(c, w)), '-')
    FROM pg_extension e WHERE e.extname = 'courier'
    UNION ALL
    SELECT 'schema acl: ' || COALESCE(n.nspacl::text, '-') FROM pg_namespace n, ext WHERE n.oid = ext.extnamespace
    UNION ALL
    -- Every member object, by description.
    SELECT 'member: ' || pg_describe_object(m.classid, m.objid, 0) FROM members m
    UNION ALL
    -- Functions: the whole definition (arguments with defaults, result, language, volatility,
    -- strictness, security, parallel safety, cost, SET options, the C symbol or the SQL body),
    -- its owner-independent ACL.
    SELECT 'function ' || p.oid::regprocedure || E':\n' || pg_get_functiondef(p.oid)
           || E'\n  acl: ' || COALESCE(p.proacl::text, 'default')
    FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
    UNION ALL
    -- The extension's own initial privileges (pg_dump dumps only what differs from them).
    SELECT 'initial privileges of ' || pg_describe_object(i.classoid, i.objoid, i.objsubid) || ': '
           || i.initprivs::text
    FROM pg_init_privs i JOIN members m ON m.classid = i.classoid AND m.objid = i.objoid
    UNION ALL
    -- Relations: kind, persistence, options, ACL.
    SELECT 'relation ' || c.oid::regclass || ': kind=' || c.relkind::text || ' persistence=' || c.relpersistence::text
           || ' options=' || COALESCE(c.reloptions::text, '-') || ' acl=' || COALESCE(c.relacl::text, '-')
    FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
    UNION ALL
    -- Columns with types, collations, defaults, nullability, identity and generation.
    SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ': ' || format_type(a.atttypid, a.atttypmod)
           || ' collate=' || COALESCE((SELECT collname FROM pg_collation WHERE oid = a.attcollation), '-')
           || ' notnull=' || a.attnotnull
           || ' default=' || COALESCE(pg_get_expr(d.adbin, d.adrelid), '-')
           || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
           || ' storage=' || a.attstorage::text || ' position=' || a.attnum
    FROM pg_attribute a
    JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    -- Constraints.
    SELECT 'constraint ' || co.conrelid::regclass || '.' || co.conname || ': ' || pg_get_constraintdef(co.oid)
    FROM pg_constraint co JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = co.conrelid
    UNION ALL
    -- Indexes with their full definition and storage options.
    SELECT 'index ' || i.indexrelid::regclass || ': ' || pg_get_indexdef(i.indexrelid)
           || ' options=' || COALESCE(c.reloptions::text, '-')
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = i.indrelid
    UNION ALL
    -- Sequences with their parameters and owning column.
    SELECT 'sequence ' || s.seqrelid::regclass || ': type=' || format_type(s.seqtypid, NULL)
           || ' start=' || s.seqstart || ' increment=' || s.seqincrement || ' min=' || s.seqmin
           || ' max=' || s.seqmax || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
           || ' owned_by=' || COALESCE((SELECT d.refobjid::regclass || '.' || a.attname
                                        FROM pg_depend d
                                        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                        WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                                          AND d.deptype = 'a'), '-')
    FROM pg_sequence s JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = s.seqrelid
    UNION ALL
    -- Views.
    SELECT 'view ' || c.oid::regclass || E':\n' || pg_get_viewdef(c.oid)
    FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
    WHERE c.relkind = 'v'
    UNION ALL
    -- Triggers and rules on courier's relations (none today; an upgrade must not leave any).
    SELECT 'trigger ' || t.tgrelid::regclass || '.' || t.tgname || ': ' || pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = t.tgrelid
    WHERE NOT t.tgisinternal
    UNION ALL
    SELECT 'rule ' || r.ev_class::regclass || '.' || r.rulename || ': ' || pg_get_ruledef(r.oid)
    FROM pg_rewrite r JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = r.ev_class
    WHERE r.rulename <> '_RETURN'
)
SELECT line FROM facts ORDER BY line;
