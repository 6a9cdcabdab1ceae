/*
 * multinet_clientid: a mosquitto 2.x plugin that binds MQTT client ids to broker users.
 *
 * Why: mosquitto lets any authenticated client connect with any client id, and a CONNECT
 * with an id already in use takes over that session (the other connection is closed, its
 * queued QoS 1 messages are handed to the newcomer, and the ACL then drops them for the
 * wrong user). With this plugin a user may only use the client ids the rules file gives it;
 * any other CONNECT gets CONNACK "Not authorized" before the broker touches a session.
 *
 * It only refuses: for a client id the user may use it defers, and the password file
 * decides as before; it never grants anything by itself. The dynamic security plugin binds
 * exactly one client id to a user; multinet's users hold several (a node's PREM worker,
 * monitor and mobility_events share the node's credentials; an NSA replica opens two
 * connections), hence this plugin.
 *
 * Configuration (mosquitto.conf):
 *   plugin /path/to/multinet_clientid.so
 *   plugin_opt_clientid_file /path/to/clientids
 * The rules file (deploy/mosquitto/clientids has the syntax) is read at start and again on
 * SIGHUP; a start with an unreadable or invalid file fails, a reload with one keeps the
 * rules it had and logs why.
 *
 * Build: cc -shared -fPIC -O2 -Wall -Wextra -o multinet_clientid.so multinet_clientid.c
 * (headers from Debian's mosquitto-dev; the symbols are the broker's own).
 */

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define LINE_MAX_BYTES 1024
#define PREFIX "multinet_clientid: "

struct rule {
	char *user; /* NULL: a pattern, for every user ("%u" stands for the username) */
	char *id;   /* the client id; a final '*' matches any rest */
	struct rule *next;
};

struct state {
	mosquitto_plugin_id_t *identifier;
	char *path;
	struct rule *rules;
};

static struct state plugin_state;

static void free_rules(struct rule *rule)
{
	while(rule){
		struct rule *next = rule->next;
		free(rule->user);
		free(rule->id);
		free(rule);
		rule = next;
	}
}

/* Whether a client id is well formed for a rule: printable ASCII without spaces, a '*' only
 * as the last character, "%u" only in patterns. */
static const char *id_problem(const char *id, bool pattern)
{
	size_t i;
	if(id[0] == '\0') return "an empty client id";
	for(i = 0; id[i] != '\0'; i++){
		unsigned char c = (unsigned char)id[i];
		if(c <= 0x20 || c >= 0x7f) return "a character that is not printable ASCII";
		if(c == '*' && id[i+1] != '\0') return "a '*' that is not the last character";
		if(c == '%'){
			if(!pattern) return "a '%' outside a pattern line";
			if(id[i+1] != 'u') return "a '%' not followed by 'u'";
		}
	}
	return NULL;
}

static char *copy(const char *text)
{
	size_t n = strlen(text) + 1;
	char *out = malloc(n);
	if(out) memcpy(out, text, n);
	return out;
}

/* Read the rules file; NULL (and a logged reason) when it cannot be read or is invalid. An
 * empty result is represented by *ok = true and NULL. */
static struct rule *load_rules(const char *path, bool *ok)
{
	FILE *file;
	char line[LINE_MAX_BYTES];
	char *user = NULL;
	struct rule *head = NULL, **tail = &head;
	int number = 0;

	*ok = false;
	file = fopen(path, "r");
	if(!file){
		mosquitto_log_printf(MOSQ_LOG_ERR, PREFIX "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	while(fgets(line, sizeof(line), file)){
		char *keyword, *value, *extra, *save = NULL;
		const char *problem;
		struct rule *rule;
		number++;
		if(!strchr(line, '\n') && !feof(file)){
			mosquitto_log_printf(MOSQ_LOG_ERR, PREFIX "%s:%d: line too long", path, number);
			goto fail;
		}
		keyword = strtok_r(line, " \t\r\n", &save);
		if(!keyword || keyword[0] == '#') continue;
		value = strtok_r(NULL, " \t\r\n", &save);
		extra = strtok_r(NULL, " \t\r\n", &save);
		if(!value || (extra && extra[0] != '#')){
			mosquitto_log_printf(MOSQ_LOG_ERR, PREFIX "%s:%d: expected '%s VALUE'",
					path, number, keyword);
			goto fail;
		}
		if(!strcmp(keyword, "user")){
			free(user);
			user = copy(value);
			if(!user) goto nomem;
			continue;
		}
		if(strcmp(keyword, "pattern") && strcmp(keyword, "clientid")){
			mosquitto_log_printf(MOSQ_LOG_ERR,
					PREFIX "%s:%d: unknown keyword '%.64s' (pattern, user, clientid)",
					path, number, keyword);
			goto fail;
		}
		if(!strcmp(keyword, "clientid") && !user){
			mosquitto_log_printf(MOSQ_LOG_ERR, PREFIX "%s:%d: clientid before any user line",
					path, number);
			goto fail;
		}
		problem = id_problem(value, !strcmp(keyword, "pattern"));
		if(problem){
			mosquitto_log_printf(MOSQ_LOG_ERR, PREFIX "%s:%d: '%.128s' has %s",
					path, number, value, problem);
			goto fail;
		}
		rule = calloc(1, sizeof(*rule));
		if(!rule) goto nomem;
		*tail = rule;
		tail = &rule->next;
		rule->id = copy(value);
		if(!rule->id) goto nomem;
		if(!strcmp(keyword, "clientid")){
			rule->user = copy(user);
			if(!rule->user) goto nomem;
		}
	}
	if(ferror(file)){
		mosquitto_log_printf(MOSQ_LOG_ERR, PREFIX "cannot read %s", path);
		goto fail;
	}
	fclose(file);
	free(user);
	*ok = true;
	return head;

nomem:
	mosquitto_log_printf(MOSQ_LOG_ERR, PREFIX "out of memory reading %s", path);
fail:
	fclose(file);
	free(user);
	free_rules(head);
	return NULL;
}

/* Whether `clientid` is what `rule` allows for `username`. */
static bool id_matches(const char *rule, const char *username, const char *clientid)
{
	const char *c = clientid;
	const char *r = rule;
	while(*r){
		if(r[0] == '*' && r[1] == '\0') return true;
		if(r[0] == '%' && r[1] == 'u'){
			size_t n = strlen(username);
			if(strncmp(c, username, n)) return false;
			c += n;
			r += 2;
			continue;
		}
		if(*c != *r) return false;
		c++;
		r++;
	}
	return *c == '\0';
}

static bool allowed(const struct rule *rules, const char *username, const char *clientid)
{
	const struct rule *rule;
	for(rule = rules; rule; rule = rule->next){
		if(rule->user && strcmp(rule->user, username)) continue;
		if(id_matches(rule->id, username, clientid)) return true;
	}
	return false;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	struct state *state = userdata;
	const char *clientid;
	(void)event;

	/* No username: the broker's allow_anonymous decides (multinet's configuration: refused). */
	if(ed->username == NULL) return MOSQ_ERR_PLUGIN_DEFER;
	clientid = mosquitto_client_id(ed->client);
	if(clientid && allowed(state->rules, ed->username, clientid)){
		return MOSQ_ERR_PLUGIN_DEFER; /* the password file decides */
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			PREFIX "refused CONNECT from %s: client id '%.128s' does not belong to user '%.128s'",
			mosquitto_client_address(ed->client) ? mosquitto_client_address(ed->client) : "?",
			clientid ? clientid : "", ed->username);
	return MOSQ_ERR_AUTH;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	struct state *state = userdata;
	struct rule *rules;
	bool ok;
	(void)event;
	(void)event_data;

	rules = load_rules(state->path, &ok);
	if(!ok){
		mosquitto_log_printf(MOSQ_LOG_ERR, PREFIX "reload failed; keeping the previous rules");
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	free_rules(state->rules);
	state->rules = rules;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, PREFIX "rules reloaded from %s", state->path);
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int i;
	bool ok;
	const char *path = NULL;

	for(i = 0; i < option_count; i++){
		if(!strcmp(options[i].key, "clientid_file")) path = options[i].value;
	}
	if(!path){
		mosquitto_log_printf(MOSQ_LOG_ERR, PREFIX "plugin_opt_clientid_file is not set");
		return MOSQ_ERR_INVAL;
	}
	memset(&plugin_state, 0, sizeof(plugin_state));
	plugin_state.identifier = identifier;
	plugin_state.path = copy(path);
	if(!plugin_state.path) return MOSQ_ERR_NOMEM;
	plugin_state.rules = load_rules(path, &ok);
	if(!ok){
		free(plugin_state.path);
		return MOSQ_ERR_INVAL;
	}
	*userdata = &plugin_state;
	if(mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, &plugin_state)
			|| mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, on_reload, NULL, &plugin_state)){
		return MOSQ_ERR_UNKNOWN;
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, PREFIX "client ids bound to users per %s", path);
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	struct state *state = userdata;
	(void)options;
	(void)option_count;

	if(state){
		mosquitto_callback_unregister(state->identifier, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
		mosquitto_callback_unregister(state->identifier, MOSQ_EVT_RELOAD, on_reload, NULL);
		free_rules(state->rules);
		free(state->path);
		state->rules = NULL;
		state->path = NULL;
	}
	return MOSQ_ERR_SUCCESS;
}
