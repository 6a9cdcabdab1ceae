// A legacy NSA's SOAP client: gSOAP stubs generated from the served WSDL with wsdl2h and
// soapcpp2 at their default options (tests/security/soap/test_gsoap_client.py builds it).
//
//   gsoap_client ENDPOINT USER PASSWORD Install|Update|Flush MOBILE_ROUTER DOWNLINK [UPLINK]
//   gsoap_client ENDPOINT USER PASSWORD GetStatus MOBILE_ROUTER
//
// DOWNLINK and UPLINK are files holding the policy documents; USER "-" sends no credentials.
// Prints one line per node ("node direction outcome version" for a delivery, "node direction
// online version last_result" for GetStatus); on a SOAP Fault prints it and exits 2.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "soapH.h"
#include "MultinetSoapGateway.nsmap"

static std::string slurp(const char *path)
{
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

static std::string version(const LONG64 *value)
{
    return value ? std::to_string(*value) : std::string("-");
}

static int results(const ns1__NodeResultArray *array)
{
    if (!array) return 0;
    for (const ns1__NodeResult *row : array->NodeResult) {
        std::cout << row->node << ' ' << row->direction << ' ' << row->outcome << ' '
                  << version(row->version) << '\n';
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        std::cerr << "usage: gsoap_client ENDPOINT USER PASSWORD OPERATION MOBILE_ROUTER "
                     "[DOWNLINK [UPLINK]]\n";
        return 64;
    }
    const char *endpoint = argv[1];
    const std::string operation = argv[4];
    struct soap *soap = soap_new();
    if (std::string(argv[2]) != "-") {
        soap->userid = argv[2];
        soap->passwd = argv[3];
    }
    int rc = SOAP_OK;
    if (operation == "GetStatus") {
        ns1__GetStatus request;
        request.mobile_USCORErouter = argv[5];
        ns1__get_USCOREstatusResponse response;
        rc = soap_call___ns1__GetStatus(soap, endpoint, NULL, &request, response);
        if (rc == SOAP_OK && response.get_USCOREstatusResult) {
            for (const ns1__NodeStatus *row : response.get_USCOREstatusResult->NodeStatus) {
                std::cout << row->node << ' ' << row->direction << ' '
                          << (row->online && *row->online ? "online" : "offline") << ' '
                          << version(row->version) << ' '
                          << (row->last_USCOREresult ? *row->last_USCOREresult : "-") << '\n';
            }
        }
    } else if (argc >= 7) {
        std::string downlink = slurp(argv[6]);
        std::string uplink = argc >= 8 ? slurp(argv[7]) : "";
        std::string *up = argc >= 8 ? &uplink : NULL;
        if (operation == "Install") {
            ns1__Install request;
            request.mobile_USCORErouter = argv[5];
            request.downlink = downlink;
            request.uplink = up;
            ns1__installResponse response;
            rc = soap_call___ns1__Install(soap, endpoint, NULL, &request, response);
            if (rc == SOAP_OK) results(response.installResult);
        } else if (operation == "Update") {
            ns1__Update request;
            request.mobile_USCORErouter = argv[5];
            request.downlink = downlink;
            request.uplink = up;
            ns1__updateResponse response;
            rc = soap_call___ns1__Update(soap, endpoint, NULL, &request, response);
            if (rc == SOAP_OK) results(response.updateResult);
        } else if (operation == "Flush") {
            ns1__Flush request;
            request.mobile_USCORErouter = argv[5];
            request.downlink = downlink;
            request.uplink = up;
            ns1__flushResponse response;
            rc = soap_call___ns1__Flush(soap, endpoint, NULL, &request, response);
            if (rc == SOAP_OK) results(response.flushResult);
        } else {
            std::cerr << "unknown operation " << operation << '\n';
            return 64;
        }
    } else {
        std::cerr << operation << " needs a DOWNLINK document file\n";
        return 64;
    }
    if (rc != SOAP_OK) {
        soap_print_fault(soap, stdout);
        std::cout.flush();
    }
    soap_destroy(soap);
    soap_end(soap);
    soap_free(soap);
    return rc == SOAP_OK ? 0 : 2;
}
